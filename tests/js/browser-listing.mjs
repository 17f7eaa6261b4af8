// Drives Debian's Chromium (headless, through puppeteer-core) the way a person uses a gateway's directory
// listing: open the listing, look at it (a full-page screenshot), click one file's link, and read what comes
// back. Used by tests/tests/browser.rs; developed against nginx's autoindex.
//
//   node browser-listing.mjs <listing-url> <link-text> <screenshot.png>
//   stdout, one line: {"listingStatus":200,"listingTitle":"...","links":["..."],"fileUrl":"...",
//                      "fileStatus":200,"fileBody":"...","contentType":"...","blocked":[]}
//
// `links` are the texts of every <a> on the listing, trimmed, in page order; `fileBody` is the body of the
// response to the click as the server sent it (not the text Chromium renders around it); `blocked` lists the
// requests the page tried outside 127.0.0.1 (refused). Any failure, including an HTTP error on either page or
// a link that is not there: one line on stderr, exit 1 (2 for bad usage). The whole run is bounded by 60 s.
//
// Only 127.0.0.1 is reached: the listing URL must name it, every request the page makes elsewhere is aborted,
// and the browser itself is given a dead loopback proxy and a host resolver that resolves nothing, so its own
// background traffic (updates, safe browsing, ...) cannot leave the machine either. Set CHROMIUM to use
// another binary than /usr/bin/chromium; puppeteer-core never downloads one.

import puppeteer from 'puppeteer-core'

const TIMEOUT_MS = 60_000
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'

let browser
let failed = false

function fail (message, code = 1) {
  // The first failure is the cause; closing the browser makes the pending steps fail again.
  if (failed) return
  failed = true
  process.stderr.write(`browser-listing: ${message}\n`)
  // puppeteer kills the Chromium child on process exit; close() is the polite path when it is quick.
  const closing = browser ? browser.close().catch(() => {}) : Promise.resolve()
  Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 2000))]).then(() => process.exit(code))
}

function isLoopback (url) {
  try {
    const u = new URL(url)
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname === '127.0.0.1'
  } catch {
    return false
  }
}

async function main () {
  const [listingUrl, linkText, screenshot] = process.argv.slice(2)
  if (!listingUrl || !linkText || !screenshot) {
    fail('usage: node browser-listing.mjs <listing-url> <link-text> <screenshot.png>', 2)
    return
  }
  if (!isLoopback(listingUrl)) {
    fail(`the listing URL must be http://127.0.0.1:<port>/...: ${listingUrl}`, 2)
    return
  }

  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: [
        '--no-sandbox', // we run as root, where Chromium's sandbox refuses to start
        '--disable-dev-shm-usage',
        '--disable-gpu',
        '--proxy-server=http://127.0.0.1:9', // loopback is never proxied; anything else dies here
        '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-domain-reliability',
        '--disable-sync',
        '--no-pings',
        '--no-first-run'
      ]
    })
  } catch (e) {
    throw new Error(`cannot start ${CHROMIUM} (run scripts/setup.sh): ${e.message}`)
  }

  const page = await browser.newPage()
  page.setDefaultTimeout(TIMEOUT_MS)
  await page.setViewport({ width: 1280, height: 800 })
  const blocked = []
  await page.setRequestInterception(true)
  page.on('request', (request) => {
    const url = request.url()
    if (isLoopback(url) || url.startsWith('data:') || url === 'about:blank') {
      request.continue()
    } else {
      blocked.push(url)
      request.abort('blockedbyclient')
    }
  })
  // Every response by URL, so a click that ends in a download (no navigation) can still be reported.
  const responses = new Map()
  page.on('response', (response) => responses.set(response.url(), response))

  const listing = await page.goto(listingUrl, { waitUntil: 'load' })
  if (!listing) throw new Error(`no response for ${listingUrl}`)
  const listingStatus = listing.status()
  if (listingStatus >= 400) {
    const body = (await listing.text().catch(() => '')).slice(0, 300)
    throw new Error(`the listing ${listingUrl} answered ${listingStatus}: ${body}`)
  }
  const listingTitle = await page.title()
  await page.screenshot({ path: screenshot, fullPage: true })

  const anchors = await page.$$('a')
  const links = []
  let target
  let targetHref
  for (const a of anchors) {
    const [text, href] = await a.evaluate((el) => [el.textContent.trim(), el.href])
    links.push(text)
    if (target === undefined && text === linkText) {
      target = a
      targetHref = href
    }
  }
  if (target === undefined) {
    throw new Error(`no link with text ${JSON.stringify(linkText)} on ${listingUrl}; links: ${JSON.stringify(links)}`)
  }

  let file
  try {
    ;[file] = await Promise.all([
      page.waitForNavigation({ waitUntil: 'load', timeout: 30_000 }),
      target.click()
    ])
  } catch (e) {
    const seen = responses.get(targetHref)
    const detail = seen
      ? `the server answered ${seen.status()} with content-type ${seen.headers()['content-type']}` +
        ` and content-disposition ${seen.headers()['content-disposition']} (a download, not a page?)`
      : 'no response was seen for it'
    throw new Error(`clicking ${JSON.stringify(linkText)} (${targetHref}) did not open a page: ${e.message}; ${detail}`)
  }
  if (!file) throw new Error(`clicking ${JSON.stringify(linkText)} navigated within the page (a fragment link?)`)
  const fileStatus = file.status()
  const fileBody = await file.text()
  if (fileStatus >= 400) {
    throw new Error(`${file.url()} answered ${fileStatus}: ${fileBody.slice(0, 300)}`)
  }

  process.stdout.write(JSON.stringify({
    listingStatus,
    listingTitle,
    links,
    fileUrl: page.url(),
    fileStatus,
    fileBody,
    contentType: file.headers()['content-type'] ?? null,
    blocked
  }) + '\n')
  await browser.close()
}

const timer = setTimeout(() => fail(`timed out after ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS)
main().then(() => {
  clearTimeout(timer)
}, (e) => {
  clearTimeout(timer)
  fail(e.message)
})
