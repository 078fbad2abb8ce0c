// Drives a real VS Code workbench (code-server) in Debian's chromium through playwright-core, for
// tests/editors/test_vscode_e2e.py. Writes a JSON report (steps, what the workbench showed at each check,
// screenshots); the Python test makes the assertions, mostly on the files on disk.
// Argv: <playwright-core dir> <workbench url> <plan.json> <report path>
// The plan names the scenario ("daily" or "restricted") and the paths it needs (see the test).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const [pwDir, url, planPath, reportPath] = process.argv.slice(2);
const { chromium } = require(pwDir);
const plan = JSON.parse(fs.readFileSync(planPath, 'utf8'));

const report = { steps: [], console: [], checks: {} };
const fetches = []; // VS Code's inline completion fetches (start, end with the items), in order
const t0 = Date.now();
const step = (s) => report.steps.push(`${s}@${((Date.now() - t0) / 1000).toFixed(1)}s`);
const WAIT = { timeout: 240000 };
const STATUS = '#status\\.extension\\.codellama-lsp\\.codellama-lsp\\.codellama\\.status, .statusbar-item';
const shot = (page, name) => page.screenshot({ path: path.join(plan.shots, `${name}.png`) });

async function fileChanged(file, before, ms = 20000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && fs.readFileSync(file, 'utf8') === before) await sleep(100);
  return fs.readFileSync(file, 'utf8');
}

/** The file once Ctrl+S has saved it: the save is over when the active tab is no longer dirty (read while
 * VS Code writes it, the file can be empty). */
async function savedFile(page, file, before, ms = 60000) {
  await until(async () => (await page.locator('.tab.active.dirty').count()) === 0, ms, 'the save').catch(() => {});
  return fileChanged(file, before, ms);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

async function palette(page, command) {
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor(WAIT);
  await input.fill(`>${command}`);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: command }).first().waitFor(WAIT);
  await page.keyboard.press('Enter');
}

/** Change a setting in the Settings editor (the user's settings), the way a user does. */
async function setSetting(page, key, value) {
  await palette(page, 'Preferences: Open User Settings');
  // The search box has the focus when the Settings editor opens.
  await page.locator('.settings-editor .settings-header .monaco-editor').first().waitFor(WAIT);
  await page.keyboard.press('Control+A');
  await page.keyboard.type(key);
  const input = page.locator(`.settings-editor .settings-tree-container input[aria-label="${key}"]`).first();
  await input.waitFor(WAIT);
  // Typed as a user does; on a loaded machine the editor may re-render the row mid-typing, so check
  // what the box holds and type again if it is not the value.
  for (let attempt = 0; attempt < 3 && (await input.inputValue()) !== value; attempt++) {
    await input.selectText();
    await page.keyboard.type(value);
  }
  await page.keyboard.press('Enter');
  await until(() => { // written to the user's settings file
    try { return JSON.parse(fs.readFileSync(plan.settingsFile, 'utf8'))[key] === (/^\d+$/.test(value) ? Number(value) : value); } catch { return false; }
  }, 30000, `${key} to be saved`);
  await page.keyboard.press('Escape');
}

async function gotoLineEnd(page, line) {
  await page.keyboard.press('Control+G');
  await page.keyboard.type(String(line));
  await page.keyboard.press('Enter');
  await page.keyboard.press('End');
}

/** What the editor shows: the cursor line's ghost spans, further ghost lines, the suggest widget. */
async function ghost(page) {
  return page.evaluate(() => {
    // On the cursor line: one span per token, in order; the part that previews the suggest widget's item
    // is styled apart (-preview). Further lines are view zones (.suggest-preview-text .view-line; in older
    // VS Code versions .ghost-text .view-line).
    const first = [...document.querySelectorAll('.view-line .ghost-text-decoration, .view-line .ghost-text-decoration-preview')]
      .filter((e) => !e.closest('.ghost-text, .suggest-preview-text')).map((e) => e.textContent).join('');
    const rest = [...document.querySelectorAll('.suggest-preview-text .view-line, .ghost-text .view-line')].map((e) => e.textContent);
    const widget = document.querySelector('.editor-widget.suggest-widget.visible');
    const selected = widget?.querySelector('.monaco-list-row.focused .label-name')?.textContent ?? null;
    return { first, rest, suggestWidget: !!widget, selected };
  });
}

/** The chat webview's entries, in the order shown (the webview is an iframe inside an iframe). */
async function chatEntries(page) {
  for (const frame of page.frames()) {
    try {
      const entries = await frame.evaluate(() => {
        const log = document.getElementById('log');
        return log ? [...log.children].map((e) => ({ cls: e.className, text: e.textContent })) : null;
      });
      if (entries) return entries;
    } catch {}
  }
  return null;
}

async function toasts(page) {
  return page.evaluate(() => [...document.querySelectorAll('.notifications-toasts .notification-toast')]
    .filter((e) => e.offsetParent !== null).map((e) => e.textContent));
}

async function openFile(page, name) {
  const row = page.locator('.explorer-folders-view .monaco-list-row', { hasText: name }).first();
  await row.waitFor(WAIT);
  await row.dblclick();
  await page.waitForSelector(`.tab[data-resource-name="${name}"], .tab:has-text("${name}")`, WAIT);
  await page.locator('.monaco-editor .view-lines').first().click();
}

async function watchStatus(page) {
  // Every text the status item shows, so flashes ("error", "· 0 ms") between checks are seen too.
  await page.evaluate(() => {
    window.__statusSeen = [];
    const note = () => {
      for (const e of document.querySelectorAll('.statusbar-item')) {
        const t = e.textContent || '';
        if (t.includes('Code Llama') && window.__statusSeen[window.__statusSeen.length - 1] !== t) window.__statusSeen.push(t);
      }
    };
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true });
    note();
  });
}
const statusSeen = (page) => page.evaluate(() => window.__statusSeen || []);
const statusNow = async (page) => (await page.locator('.statusbar-item', { hasText: 'Code Llama' }).first().textContent()) || '';
const waitReady = (page) => page.locator(STATUS, { hasText: 'Code Llama ready' }).first().waitFor(WAIT);

async function daily(page) {
  const { file, gateFifo, wrapperLog, serverLog } = plan;
  await watchStatus(page);
  await openFile(page, path.basename(file));
  step('opened');

  // 4. Keystrokes while the server is not ready: the server is held back (its start waits on a FIFO the
  // test owns), the status bar says so, the user types; then the server comes up and the suggestion
  // must appear without another key.
  await page.locator(STATUS, { hasText: 'Code Llama' }).first().waitFor(WAIT);
  await until(() => fs.existsSync(wrapperLog) && fs.readFileSync(wrapperLog, 'utf8').includes('start'), 120000, 'the server start');
  report.checks.statusWhileHeld = await statusNow(page);
  await gotoLineEnd(page, plan.line);
  await page.keyboard.type(plan.typed, { delay: 30 });
  step('typed while not ready');
  fs.writeFileSync(gateFifo, 'go\n');
  step('server released');
  await waitReady(page);
  step('ready');
  const appeared = await page.waitForSelector('.ghost-text-decoration', { timeout: 90000 }).then(() => true, () => false);
  report.checks.afterLoad = { appeared, ...(await ghost(page)), status: await statusNow(page), seen: await statusSeen(page) };
  await shot(page, 'after-load');
  step('ghost after load without a key');
  if (!appeared) throw new Error('no suggestion after the model was ready (no key pressed since)');

  // Alternatives: that request was invoked (asked again once ready), so the server sent every distinct
  // suggestion; "next inline suggestion" (Alt+]) shows the second, and Tab accepts that one. What VS Code
  // fetched is in its fetch log; the wait ends when the editor draws the second item in full (its further
  // lines are view zones, drawn after the first line).
  const shown = (g) => [g.first, ...g.rest].join('\n').replace(/\u00a0/g, ' ');
  const answered = () => fetches.filter((f) => f.kind === 'end' && f.result.length);
  const asked = answered().at(-1) || { result: [] };
  const items = asked.result;
  const trigger = fetches.find((f) => f.kind === 'start' && f.id === asked.id)?.trigger; // 1: explicit
  report.checks.next = { fetchesBefore: answered().length, items, trigger };
  await page.keyboard.press('Alt+BracketRight');
  step('next (Alt+])');
  report.checks.next.second = items.length < 2 ? null : await until(async () => {
    const g = await ghost(page);
    return shown(g) === items[1] ? g : null;
  }, 180000, 'the second suggestion drawn after Alt+]').catch(() => null);
  report.checks.next.shown = await ghost(page);
  report.checks.next.fetches = fetches;
  await shot(page, 'next-suggestion');
  if (!report.checks.next.second) throw new Error('Alt+] did not show the second suggestion');

  // The happy path: Tab accepts, Ctrl+S saves; the test compares the file with the ghost text.
  const before = fs.readFileSync(file, 'utf8');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Control+S');
  report.checks.tab = { saved: await savedFile(page, file, before) };
  step('tab+save');

  // 1. The suggest widget open with its item selected and ghost text extending it: Tab takes both.
  await gotoLineEnd(page, plan.suggestLine);
  await page.keyboard.type(plan.suggestTyped, { delay: 30 });
  // The suggestion for the typed word first, then the widget: VS Code asks again with its selected item.
  await page.waitForSelector('.ghost-text-decoration, .ghost-text-decoration-preview', { timeout: 60000 }).catch(() => {});
  let both = null;
  for (let attempt = 0; attempt < 4 && !both; attempt++) {
    const g = await ghost(page);
    if (!g.suggestWidget) await page.keyboard.press('Control+Space');
    both = await until(async () => {
      const g = await ghost(page);
      const extends_ = g.selected && g.first && (plan.suggestTyped + g.first).startsWith(g.selected);
      return g.suggestWidget && extends_ ? g : null;
    }, 30000, 'the suggest widget and ghost text extending its item').catch(() => null);
  }
  report.checks.suggest = { shown: both };
  await shot(page, 'suggest-and-ghost');
  const before1 = fs.readFileSync(file, 'utf8');
  await page.keyboard.press('Tab');
  await until(async () => !(await ghost(page)).suggestWidget, 10000, 'the suggest widget to close').catch(() => {});
  const afterTab = await ghost(page);
  const lineText = await page.evaluate((n) => {
    const lines = [...document.querySelectorAll('.view-lines .view-line')];
    return lines.map((e) => ({ top: parseFloat(e.style.top), text: e.textContent.replace(/\u00a0/g, ' ') }));
  }, plan.suggestLine);
  await shot(page, 'suggest-after-tab');
  await page.keyboard.press('Control+S');
  report.checks.suggest.saved = await savedFile(page, file, before1);
  report.checks.suggest.afterTab = afterTab;
  report.checks.suggest.lines = lineText;
  step('suggest tab');

  // 2. An action that fails: one message, no modal dialog. Write unit tests on an unsaved file fails.
  await page.keyboard.press('Control+N');
  await page.waitForSelector('.tab:has-text("Untitled")', WAIT);
  await page.keyboard.type('def twice(x):\n    return 2 * x\n');
  await page.keyboard.press('Control+A');
  await palette(page, 'Code Llama: Write unit tests');
  await until(async () => (await toasts(page)).some((t) => /unit tests/i.test(t)), 60000, 'the failure message');
  await sleep(2000); // lets a second message or a modal render, if there were one: their absence is the check
  report.checks.failure = {
    toasts: await toasts(page),
    modal: await page.evaluate(() => [...document.querySelectorAll('.monaco-dialog-box')].map((e) => e.textContent)),
  };
  await shot(page, 'failed-action');
  step('failed action');
  await page.keyboard.press('Escape');
  await palette(page, 'Notifications: Clear All Notifications');
  await palette(page, 'View: Revert and Close Editor');

  // 3 + 7. Explain: a progress notification while it runs, the heading above its answer, a sign when the
  // answer was cut at the token limit; then the chat survives a window reload.
  await openFile(page, path.basename(file));
  await gotoLineEnd(page, plan.explainLine);
  await palette(page, 'Code Llama: Explain this');
  const progress = await until(async () => (await toasts(page)).find((t) => t.includes('Explain this')), 30000, 'progress')
    .catch(() => null);
  report.checks.explain = { progress };
  await until(async () => {
    const e = await chatEntries(page);
    return e && e.some((x) => x.cls.includes('note')) ? e : null;
  }, 180000, 'the Explain answer with its cut sign').catch(() => {});
  await until(async () => !(await toasts(page)).some((t) => t.includes('Explain this')), 180000, 'the action to finish').catch(() => {});
  report.checks.explain.entries = await chatEntries(page);
  report.checks.explain.panelTitle = await page.evaluate(() =>
    [...document.querySelectorAll('.part.panel .composite.title, .part.panel .title-label, .pane-header .title')]
      .map((e) => e.textContent).join(' | '));
  await shot(page, 'explain');
  step('explain');

  // 7. Our code actions say whose they are.
  await page.locator('.monaco-editor .view-lines').first().click();
  await gotoLineEnd(page, plan.explainLine);
  await page.keyboard.press('Shift+Home');
  await page.keyboard.press('Control+.');
  const actions = await until(async () => {
    const items = await page.evaluate(() => [...document.querySelectorAll('.action-widget .action-list-item, .action-widget .monaco-list-row')]
      .map((e) => e.textContent));
    return items.length ? items : null;
  }, 30000, 'the code action menu').catch(() => []);
  report.checks.codeActions = actions;
  await page.keyboard.press('Escape');
  step('code actions');

  // 6. Settings changed in the Settings editor, as a user does. One the server applies live: no restart.
  // Then a server setting: a clean restart; changed again while that server loads, another clean one.
  const starts = () => (fs.readFileSync(wrapperLog, 'utf8').match(/^start/gm) || []).length;
  const appliedLive = () => (fs.existsSync(serverLog) ? fs.readFileSync(serverLog, 'utf8') : '').split('\n')
    .filter((l) => /settings applied from (workspace\/configuration|workspace\/didChangeConfiguration); changed: .*max_tokens/.test(l));
  const startsBefore = starts();
  await setSetting(page, 'codellama.maxTokens', String(plan.liveMaxTokens));
  await until(() => appliedLive().length > 0, 60000, 'the server to apply maxTokens').catch(() => {});
  report.checks.live = { startsBefore, startsAfter: starts(), serverLog: appliedLive() };
  step('live setting');
  await setSetting(page, 'codellama.server.command', 'codellama-lsp-first');
  await until(() => starts() >= startsBefore + 1, 60000, 'the restarted server').catch(() => {});
  await setSetting(page, 'codellama.server.command', 'codellama-lsp-second'); // while that one loads
  await until(() => starts() >= startsBefore + 2, 90000, 'the second restart').catch(() => {});
  await palette(page, 'View: Close All Editors');
  await waitReady(page);
  report.checks.restart = { starts: starts(), seen: await statusSeen(page), status: await statusNow(page) };
  await shot(page, 'after-restarts');
  step('restarts');

  // 7. History per workspace: reload the window, open the chat, the Explain exchange is still there.
  await page.reload({ waitUntil: 'domcontentloaded' });
  await page.waitForSelector('.monaco-workbench', WAIT);
  await page.locator(STATUS, { hasText: 'Code Llama' }).first().waitFor(WAIT);
  await palette(page, 'Code Llama: Open chat');
  report.checks.afterReload = await until(async () => {
    const e = await chatEntries(page);
    return e && e.length ? e : null;
  }, 60000, 'the chat after reload').catch(() => null);
  await shot(page, 'chat-after-reload');
  step('reload');
}

async function restricted(page) {
  // 5. Restricted Mode: the status item is there and says why nothing runs; trusting starts the server,
  // which here is missing, and the message names the setting that fixes it.
  await page.locator(STATUS, { hasText: 'Code Llama' }).first().waitFor({ timeout: 120000 });
  report.checks.restricted = { status: await statusNow(page) };
  await shot(page, 'restricted');
  step('restricted');
  await palette(page, 'Workspaces: Manage Workspace Trust');
  const trust = page.locator('.workspace-trust-editor .monaco-button', { hasText: /^Trust/ }).first();
  await trust.waitFor(WAIT);
  await trust.click();
  step('trusted');
  const msg = await until(async () => (await toasts(page)).find((t) => t.includes('codellama.server')), 60000, 'the missing-server message')
    .catch(() => null);
  report.checks.missing = { toast: msg, toasts: await toasts(page), status: await statusNow(page) };
  await shot(page, 'missing-server');
  step('missing server');
}

(async () => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true });
  let page;
  try {
    page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    page.on('console', (m) => {
      const logged = m.text().match(/InlineCompletions\.fetch @@ (\{.*\})\s*$/);
      if (logged) { // editor.inlineSuggest.logFetch: each request to the providers and what they answered
        try {
          const f = JSON.parse(logged[1]);
          fetches.push({ kind: f.kind, id: f.requestId, trigger: f.context?.triggerKind,
                         result: (f.result || []).map((r) => r.insertText) });
        } catch {}
      }
      if (report.console.length < 300) report.console.push(`${m.type()}: ${m.text()}`.slice(0, 400));
    });
    page.setDefaultTimeout(WAIT.timeout);
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('.monaco-workbench', WAIT);
    step('workbench');
    if (plan.scenario === 'restricted') await restricted(page);
    else await daily(page);
  } catch (e) {
    report.error = String(e && e.stack || e);
    try { await page?.screenshot({ path: path.join(plan.shots, 'failed.png') }); } catch {}
  } finally {
    fs.writeFileSync(reportPath, JSON.stringify(report, null, 1)); // before close: close can be slow
    await browser.close();
  }
})();
