// SPDX-License-Identifier: MIT OR Apache-2.0
// A renter's vault of ERC20 tokens that pays hosts by cumulative cheques (Swarm chequebook / BTFS vault style).
//
// The issuer signs EIP-712 `Cheque(address vault,address beneficiary,uint256 cumulativePayout)` under the domain
// `EIP712Domain(string name,string version,uint256 chainId)` with name "Vault", version "1.0" and no
// verifyingContract, as go-btfs's vault and Swarm's chequebook do: the vault address is inside the cheque.
// A beneficiary cashes the difference between the cheque's cumulative amount and what it was already paid,
// all or nothing.
pragma solidity 0.8.30;

interface IERC20 {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function balanceOf(address who) external view returns (uint256);
}

contract Vault {
    event Deposited(address indexed from, uint256 amount);
    event Withdrawn(address indexed to, uint256 amount);
    event ChequeCashed(
        address indexed beneficiary, address indexed recipient, uint256 cumulativePayout, uint256 amount
    );

    bytes32 private constant DOMAIN_TYPEHASH = keccak256("EIP712Domain(string name,string version,uint256 chainId)");
    bytes32 private constant CHEQUE_TYPEHASH =
        keccak256("Cheque(address vault,address beneficiary,uint256 cumulativePayout)");
    // secp256k1n / 2: signatures with a larger s are malleable twins (EIP-2).
    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    address public immutable issuer;
    address public immutable token;
    mapping(address => uint256) public paidOut;
    uint256 public totalPaidOut;

    constructor(address issuer_, address token_) {
        require(issuer_ != address(0), "zero issuer");
        require(token_ != address(0), "zero token");
        issuer = issuer_;
        token = token_;
    }

    /// Tokens the vault holds now; cheques are paid from this.
    function balance() public view returns (uint256) {
        return IERC20(token).balanceOf(address(this));
    }

    /// Moves `amount` tokens from the caller (who approved the vault) into the vault.
    function deposit(uint256 amount) external {
        require(IERC20(token).transferFrom(msg.sender, address(this), amount), "transfer failed");
        emit Deposited(msg.sender, amount);
    }

    /// The issuer takes back free balance. Cheques already signed but not cashed may then bounce: hosts check
    /// the balance before accepting a cheque and cash past a threshold.
    function withdraw(uint256 amount) external {
        require(msg.sender == issuer, "only issuer");
        require(amount <= balance(), "insufficient balance");
        require(IERC20(token).transfer(issuer, amount), "transfer failed");
        emit Withdrawn(issuer, amount);
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("Vault"), keccak256("1.0"), block.chainid));
    }

    /// The EIP-712 digest the issuer signs for a cheque from this vault to `beneficiary`.
    function chequeDigest(address beneficiary, uint256 cumulativePayout) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(CHEQUE_TYPEHASH, address(this), beneficiary, cumulativePayout));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// Pays the caller's unpaid part of a cumulative cheque to `recipient`, in full or not at all.
    function cashChequeBeneficiary(address recipient, uint256 cumulativePayout, bytes calldata issuerSig) external {
        address beneficiary = msg.sender;
        require(recover(chequeDigest(beneficiary, cumulativePayout), issuerSig) == issuer, "invalid issuer signature");
        uint256 already = paidOut[beneficiary];
        require(cumulativePayout > already, "cheque not increasing");
        uint256 amount = cumulativePayout - already;
        require(amount <= balance(), "insufficient balance");
        paidOut[beneficiary] = cumulativePayout;
        totalPaidOut += amount;
        require(IERC20(token).transfer(recipient, amount), "transfer failed");
        emit ChequeCashed(beneficiary, recipient, cumulativePayout, amount);
    }

    function recover(bytes32 digest, bytes calldata sig) private pure returns (address) {
        require(sig.length == 65, "invalid signature length");
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) {
            v += 27;
        }
        require(v == 27 || v == 28, "invalid signature v");
        require(uint256(s) <= HALF_N, "invalid signature s");
        address signer = ecrecover(digest, v, r, s);
        require(signer != address(0), "invalid signature");
        return signer;
    }
}
