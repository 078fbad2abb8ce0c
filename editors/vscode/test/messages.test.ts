import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ActionMessages, errorText, OnceNotices, plainMessage } from '../src/messages';

test('prefixes the server puts in front are dropped', () => {
  assert.equal(plainMessage('codellama: the range is empty'), 'the range is empty');
  assert.equal(plainMessage('codellama-lsp: codellama: x'), 'x');
  assert.equal(errorText(new Error('Request workspace/executeCommand failed with message: no code block')), 'no code block');
});

test('a failed action is reported once: the server message that repeats the error is dropped', () => {
  const m = new ActionMessages();
  assert.equal(m.offer({ type: 2, message: 'codellama: not held' }), false);
  m.begin();
  assert.equal(m.offer({ type: 2, message: "codellama: the model's answer had no code block; nothing was edited" }), true);
  assert.equal(m.offer({ type: 3, message: 'codellama-lsp: something else' }), true);
  const left = m.end("the model's answer had no code block; nothing was edited");
  assert.deepEqual(left.map((x) => x.message), ['codellama-lsp: something else']);
  m.begin();
  m.offer({ type: 3, message: 'codellama: Fix this: the model proposed no change' });
  assert.equal(m.end().length, 1, 'a successful action keeps its messages');
});

test('notices pop up once per install', () => {
  const data = new Map<string, unknown>();
  const store = { get: <T>(k: string) => data.get(k) as T | undefined, update: async (k: string, v: unknown) => void data.set(k, v) };
  const n = new OnceNotices(store);
  assert.equal(n.firstTime('codellama-lsp: using the bundled demo model'), true);
  assert.equal(n.firstTime('codellama-lsp: using the bundled demo model'), false);
  assert.equal(new OnceNotices(store).firstTime('codellama-lsp: using the bundled demo model'), false);
  assert.equal(n.firstTime('codellama-lsp: another notice'), true);
});
