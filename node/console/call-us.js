// Page logic of call-us.html: a customer calls a queue from the browser (WebCaller).
// 网页“联系我们”：客户通过浏览器呼叫队列。
import { WebCaller } from './softphone.js';

const TEXT = {
  'zh-CN': {
    title: '联系我们', intro: '点击下方按钮，通过浏览器直接与我们的客服通话。需要允许使用麦克风。',
    queue: '咨询类别', call: '呼叫', hangup: '挂断', lang: 'English',
    idle: '', connecting: '正在接通…', ringing: '正在振铃…', talking: '通话中', held: '通话保持中',
    ended: '通话已结束', failed: '呼叫失败',
  },
  en: {
    title: 'Call us', intro: 'Press the button to talk to our service team from your browser. Your microphone is needed.',
    queue: 'Topic', call: 'Call', hangup: 'Hang up', lang: '中文',
    idle: '', connecting: 'Connecting…', ringing: 'Ringing…', talking: 'In call', held: 'On hold',
    ended: 'Call ended', failed: 'Call failed',
  },
};

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let lang = params.get('lang') === 'en' || (!params.get('lang') && !navigator.language.startsWith('zh')) ? 'en' : 'zh-CN';
let caller = null;
let lastError = null;

function t(key) { return TEXT[lang][key] ?? key; }

function render() {
  document.documentElement.lang = lang;
  document.title = `${TEXT['zh-CN'].title} · ${TEXT.en.title}`;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  $('lang').textContent = t('lang');
  const state = caller ? caller.state : 'idle';
  $('status').dataset.state = state;
  if (state !== 'idle') $('status').textContent = t(state);
  $('call').disabled = state !== 'idle';
  $('hangup').disabled = state === 'idle';
  $('pad').hidden = state !== 'talking';
  $('error').textContent = lastError ? (lang === 'en' ? lastError.message : (lastError.message_zh || lastError.message)) : '';
}

async function call() {
  lastError = null;
  caller = new WebCaller();
  window.__caller = caller; // for diagnostics and tests
  caller.addEventListener('state', render);
  caller.addEventListener('error', (ev) => { lastError = ev.detail; render(); });
  caller.addEventListener('ended', (ev) => {
    $('status').textContent = ev.detail.reason === 'refused' ? t('failed') : t('ended');
    render();
  });
  try {
    await caller.call($('queue').value.trim() || 'support');
  } catch { /* shown by the error event */ }
  render();
}

$('call').addEventListener('click', call);
$('hangup').addEventListener('click', () => caller && caller.hangup());
$('lang').addEventListener('click', () => { lang = lang === 'en' ? 'zh-CN' : 'en'; render(); });
for (const b of document.querySelectorAll('[data-key]')) {
  b.addEventListener('click', () => caller && caller.dtmf(b.dataset.key));
}
if (params.get('queue')) $('queue').value = params.get('queue');
render();
