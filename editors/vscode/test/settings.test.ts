import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { disabledLanguages, languageEnabled, serverSettings } from '../src/settings';

test('server settings use the server names and leave out client-only ones', () => {
  const s = serverSettings({
    model: ' /models/cl7b ',
    quantization: '4bit',
    contextTokens: 2048,
    fimMode: 'psm',
    maxTokens: 64,
    enable: { '*': true, markdown: false, python: true },
  });
  assert.deepEqual(s, {
    model: '/models/cl7b',
    quantization: '4bit',
    contextTokens: 2048,
    fimMode: 'psm',
    maxTokens: 64,
    disabledLanguages: ['markdown'],
  });
});

test('an empty model is not sent, so the server keeps its default', () => {
  assert.equal('model' in serverSettings({ model: '  ' }), false);
});

test('per-language switch: own entry, then *, then on', () => {
  const table = { '*': false, python: true };
  assert.equal(languageEnabled(table, 'python'), true);
  assert.equal(languageEnabled(table, 'go'), false);
  assert.equal(languageEnabled({}, 'go'), true);
  assert.equal(languageEnabled(undefined, 'go'), true);
  assert.deepEqual(disabledLanguages({ '*': false, b: false, a: false, c: true }), ['a', 'b']);
});

test('package.json contributes every setting with a description, and the commands', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
  const props = pkg.contributes.configuration.properties as Record<string, { description?: string; markdownDescription?: string }>;
  for (const key of [
    'codellama.model',
    'codellama.quantization',
    'codellama.contextTokens',
    'codellama.fimMode',
    'codellama.enable',
    'codellama.server.command',
    'codellama.server.python',
  ]) {
    assert.ok(props[key], `missing setting ${key}`);
    assert.ok((props[key].description ?? props[key].markdownDescription ?? '').length > 20, `${key} needs a description`);
  }
  const commands = (pkg.contributes.commands as { command: string }[]).map((c) => c.command);
  for (const c of ['explain', 'fix', 'document', 'tests']) assert.ok(commands.includes(`codellama.${c}Selection`));
  // The server registers codellama.explain etc. itself; our command ids must not collide with them.
  assert.ok(!commands.some((c) => ['codellama.explain', 'codellama.fix', 'codellama.document', 'codellama.tests'].includes(c)));
  assert.equal(pkg.dependencies['vscode-languageclient'].split('.')[0], '11');
  assert.equal(pkg.engines.vscode, '^1.91.0');
});
