import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChatStreams, Conversation } from '../src/chatStream';

test('chunks are joined in seq order, duplicates ignored', () => {
  const s = new ChatStreams();
  assert.equal(s.push({ conversationId: 'a', seq: 0, text: 'Hel' }), 'Hel');
  assert.equal(s.push({ conversationId: 'a', seq: 2, text: '!' }), 'Hel!');
  assert.equal(s.push({ conversationId: 'a', seq: 1, text: 'lo' }), 'Hello!');
  assert.equal(s.push({ conversationId: 'a', seq: 1, text: 'XX' }), 'Hello!');
  assert.equal(s.text('b'), '');
});

test('the final answer wins over chunks, also over late ones', () => {
  const s = new ChatStreams();
  s.push({ conversationId: 'a', seq: 0, text: 'par' });
  s.finish('a', 'partial answer, complete');
  assert.equal(s.push({ conversationId: 'a', seq: 1, text: 'tial' }), 'partial answer, complete');
});

test('a conversation sends its whole history', () => {
  const c = new Conversation('x');
  assert.deepEqual(c.ask('q1'), [{ role: 'user', content: 'q1' }]);
  c.answered('a1');
  assert.deepEqual(c.ask('q2').map((m) => m.content), ['q1', 'a1', 'q2']);
});
