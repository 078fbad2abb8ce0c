import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { StatusModel } from '../src/status';

test('starting, then loading with progress, then ready with the last latency', () => {
  const m = new StatusModel();
  assert.equal(m.view().kind, 'starting');
  m.started();
  m.progress('begin', 0, 'loading model');
  m.progress('report', 42.4);
  assert.equal(m.view().text, '$(sync~spin) Code Llama loading 42%');
  m.progress('end');
  m.status({ state: 'ready', model: 'demo', device: 'cpu', quantization: 'none' });
  assert.equal(m.view().text, '$(check) Code Llama ready');
  assert.match(m.view().tooltip, /model: demo/);
  m.status({ state: 'ready', total_ms: 1234, time_to_first_token_ms: 80, prompt_tokens: 900, reused_tokens: 850, generated_tokens: 12, stop_reason: 'eot' });
  assert.equal(m.view().text, '$(check) Code Llama ready · 1.2 s');
  assert.match(m.view().tooltip, /900 prompt tokens \(850 reused\), 12 generated, stopped: eot/);
  m.status({ total_ms: 95.6 });
  assert.equal(m.view().text, '$(check) Code Llama ready · 96 ms');
});

test('errors show until the server reports a state again', () => {
  const m = new StatusModel();
  m.status({ state: 'error', message: 'no such model: /x' });
  assert.equal(m.view().kind, 'error');
  assert.match(m.view().tooltip, /no such model/);
  m.progress('report', 50);
  assert.equal(m.view().kind, 'error');
  m.status({ state: 'loading', message: 'reloading' });
  assert.equal(m.view().text, '$(sync~spin) Code Llama loading');
  m.status({ state: 'ready' });
  assert.equal(m.view().kind, 'ready');
});

test('percentages are clamped and rounded', () => {
  const m = new StatusModel();
  m.progress('report', 140);
  assert.equal(m.view().text, '$(sync~spin) Code Llama loading 100%');
});

test('no latency for a completion that never happened (not ready, empty) or for chat', () => {
  const m = new StatusModel();
  m.status({ state: 'loading' });
  m.status({ state: 'loading', total_ms: 0, source: 'none', reason: 'not_ready' });
  m.status({ state: 'ready' });
  assert.equal(m.view().text, '$(check) Code Llama ready');
  m.status({ state: 'ready', total_ms: 0.4, source: 'none', reason: 'cancelled' });
  m.status({ state: 'ready', total_ms: 2500, source: 'chat', generated_tokens: 40 });
  assert.equal(m.view().text, '$(check) Code Llama ready');
  assert.doesNotMatch(m.view().tooltip, /last completion/);
  m.status({ state: 'ready', total_ms: 310, source: 'model', generated_tokens: 7 });
  assert.equal(m.view().text, '$(check) Code Llama ready · 310 ms');
  m.status({ state: 'ready', total_ms: 2500, source: 'chat' });
  assert.match(m.view().tooltip, /last completion: 310 ms/);
});

test('restricted mode and a restart on purpose are not errors', () => {
  const m = new StatusModel();
  m.restricted();
  assert.equal(m.view().kind, 'restricted');
  assert.match(m.view().text, /Restricted Mode/);
  assert.match(m.view().tooltip, /trusted folder/);
  m.started();
  m.status({ state: 'ready' });
  m.restarting();
  assert.equal(m.view().text, '$(sync~spin) Code Llama restarting');
  m.started();
  assert.equal(m.view().kind, 'loading');
});

test("the server's last_completion_ms wins: null means no completion was answered yet", () => {
  const m = new StatusModel();
  m.status({ state: 'ready', total_ms: 0, source: 'none', reason: 'not_ready', last_completion_ms: null, last_chat_ms: null });
  assert.equal(m.view().text, '$(check) Code Llama ready');
  m.status({ state: 'ready', total_ms: 2500, source: 'chat', last_completion_ms: null, last_chat_ms: 2500 });
  assert.equal(m.view().text, '$(check) Code Llama ready');
  assert.match(m.view().tooltip, /last chat answer: 2\.5 s/);
  m.status({ state: 'ready', total_ms: 120, source: 'model', last_completion_ms: 120, last_chat_ms: 2500 });
  assert.equal(m.view().text, '$(check) Code Llama ready · 120 ms');
});
