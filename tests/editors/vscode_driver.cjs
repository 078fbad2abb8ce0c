// Drives a real VS Code workbench (code-server) in Debian's chromium through playwright-core, for
// tests/editors/test_vscode_e2e.py: open the file, wait until the extension says the server is ready,
// type, wait for ghost text, screenshot it, Tab, Ctrl+S. Writes a JSON report; the test checks the file.
// Argv: <playwright-core dir> <workbench url> <file name> <line> <typed> <screenshot path> <report path>
'use strict';
const fs = require('node:fs');
const [pwDir, url, fileName, line, typed, shotPath, reportPath] = process.argv.slice(2);
const { chromium } = require(pwDir);

const report = { steps: [], console: [] };
const t0 = Date.now();
const step = (s) => report.steps.push(`${s}@${((Date.now() - t0) / 1000).toFixed(1)}s`);
const WAIT = { timeout: 240000 };
const file = process.env.CODELLAMA_TEST_FILE;
const originalSize = fs.statSync(file).size;

(async () => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    page.on('console', (m) => {
      if (report.console.length < 200) report.console.push(`${m.type()}: ${m.text()}`.slice(0, 400));
    });
    page.setDefaultTimeout(WAIT.timeout);
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('.monaco-workbench', WAIT);
    step('workbench');
    const row = page.locator('.explorer-folders-view .monaco-list-row', { hasText: fileName }).first();
    await row.waitFor(WAIT);
    await row.dblclick();
    await page.waitForSelector(`.tab[data-resource-name="${fileName}"], .tab:has-text("${fileName}")`, WAIT);
    step('opened');
    // Typing before the language client is up gets no ghost text at all (VS Code asks once per key):
    // the extension's status bar item says "Code Llama ready" once the server's model is loaded.
    await page.locator('#status\\.extension\\.codellama-lsp\\.codellama-lsp\\.codellama\\.status, .statusbar-item', {
      hasText: 'Code Llama ready',
    }).first().waitFor(WAIT);
    step('ready');
    await page.locator('.monaco-editor .view-lines').first().click();
    await page.keyboard.press('Control+G');
    await page.keyboard.type(String(line));
    await page.keyboard.press('Enter');
    await page.keyboard.press('End');
    await page.keyboard.type(typed, { delay: 30 });
    step('typed');
    await page.waitForSelector('.ghost-text-decoration, .ghost-text', WAIT);
    // One span per token on the cursor line; further lines are view zones (.ghost-text .view-line).
    report.ghost = await page.evaluate(() => {
      const first = [...document.querySelectorAll('.view-line .ghost-text-decoration')].map((e) => e.textContent).join('');
      const rest = [...document.querySelectorAll('.ghost-text .view-line, .ghost-text-decoration-preview')]
        .map((e) => e.textContent);
      return { first, rest };
    });
    step('ghost');
    await page.screenshot({ path: shotPath });
    await page.keyboard.press('Tab');
    // Accepted: the ghost spans are gone or the line now holds the text. Only then save.
    const first = report.ghost.first;
    await page.waitForFunction((g) => {
      const lines = [...document.querySelectorAll('.view-line')].map((e) => e.textContent.replace(/\u00a0/g, ' '));
      return lines.some((l) => l.includes(g.replace(/\u00a0/g, ' ')) && !l.startsWith(g));
    }, first, { timeout: 20000 }).catch(() => { report.accept_not_seen = true; });
    step('tab');
    await page.keyboard.press('Control+S');
    // The file on disk is the truth (the DOM already shows the next suggestion after Tab).
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline && fs.statSync(file).size === originalSize) await page.waitForTimeout(100);
    step('saved');
    report.status = await page.locator('.statusbar-item', { hasText: 'Code Llama' }).first().textContent();
  } catch (e) {
    report.error = String(e && e.stack || e);
    try { await (await browser.contexts()[0]?.pages()[0])?.screenshot({ path: shotPath.replace(/\.png$/, '-failed.png') }); } catch {}
  } finally {
    fs.writeFileSync(reportPath, JSON.stringify(report, null, 1)); // before close: close can be slow
    await browser.close();
  }
})();
