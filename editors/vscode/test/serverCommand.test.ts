import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { expandHome, findExecutable, missingServerMessage, serverExecutable } from '../src/serverCommand';

test('default command runs `codellama-lsp serve` with no transport flag', () => {
  assert.deepEqual(serverExecutable({ command: '', python: '', args: [] }), { command: 'codellama-lsp', args: ['serve'] });
});

test('a configured interpreter wins and runs the module', () => {
  const exe = serverExecutable({ command: 'ignored', python: '~/venv/bin/python', args: ['--log-level', 'debug'] }, '/home/u');
  assert.deepEqual(exe, {
    command: '/home/u/venv/bin/python',
    args: ['-m', 'codellama_lsp.cli', 'serve', '--log-level', 'debug'],
  });
});

test('extra args keep their order and drop empty strings', () => {
  const exe = serverExecutable({ command: '/opt/cl/bin/codellama-lsp', python: '  ', args: ['--model', '', 'demo'] });
  assert.deepEqual(exe, { command: '/opt/cl/bin/codellama-lsp', args: ['serve', '--model', 'demo'] });
});

test('expandHome only touches a leading tilde', () => {
  assert.equal(expandHome('~', '/h'), '/h');
  assert.equal(expandHome('~/x', '/h'), '/h/x');
  assert.equal(expandHome('/a/~/b', '/h'), '/a/~/b');
  assert.equal(expandHome('~user/x', '/h'), '~user/x');
});

test('a server program that is not there is found missing before spawning, and the message names the setting', async () => {

  assert.equal(findExecutable('codellama-lsp-surely-missing', '/usr/bin:/bin'), undefined);
  assert.equal(findExecutable('sh', '/usr/bin:/bin') !== undefined, true);
  assert.equal(findExecutable('/nonexistent/python3'), undefined);
  const msg = missingServerMessage({ command: 'codellama-lsp', python: '', args: [] }, 'codellama-lsp');
  assert.match(msg, /codellama\.server\.python/);
  assert.match(missingServerMessage({ command: '', python: '/x/python', args: [] }, '/x/python'), /codellama\.server\.python/);
});
