// The console's entry point: session (login form or the signed-in shell), header with tabs,
// language switch and sign-out, toasts. The views live in agent.js, supervisor.js and kb.js.

import { t, setLang, lang, LANGS, onLangChange } from './i18n.js';
import * as api from './api.js';
import { h, replace, duration } from './dom.js';
import * as ring from './ring.js';
import { AgentDesk } from './agent.js';
import { SupervisorView } from './supervisor.js';
import { UsersView } from './users.js';

const root = document.getElementById('app');
const toasts = document.getElementById('toasts');

/** The signed-in session: user, console config, views. Null when signed out. */
let session = null;

/** Shows a short message in the corner; `kind` is "info", "ok" or "error". */
export function toast(message, kind = 'info') {
  const el = h(
    'div',
    { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, message),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': t('toast.dismiss'), onclick: () => el.remove() }, '×'),
  );
  toasts.appendChild(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

/** A person-readable message for an API failure. */
export function errorText(e) {
  if (!e) return '';
  if (e.status === 0) return t('app.error.network');
  return e.message || String(e);
}

function langSwitch(id) {
  return h(
    'label',
    { class: 'lang-switch' },
    h('span', { class: 'sr-only' }, t('app.language')),
    h(
      'select',
      { id, onchange: (e) => setLang(e.target.value), 'aria-label': t('app.language') },
      LANGS.map((l) => h('option', { value: l.code, selected: l.code === lang() }, l.name)),
    ),
  );
}

// ---------------------------------------------------------------- login

/** The login form's state, kept across language switches. */
const loginState = { username: '', error: null, lockedUntil: 0, busy: false };
let lockTimer = null;

function loginError() {
  const e = loginState.error;
  if (!e) return '';
  if (e === 'locked') {
    const left = Math.ceil((loginState.lockedUntil - Date.now()) / 1000);
    if (loginState.lockedUntil && left > 0) return t('login.error.locked', { time: duration(left * 1000) });
    if (!loginState.lockedUntil) return t('login.error.locked_unknown');
    return '';
  }
  if (e === 'credentials') return t('login.error.credentials');
  if (e === 'missing') return t('login.error.missing');
  return e;
}

function renderLogin() {
  document.title = t('app.title');
  const err = loginError();
  const locked = loginState.error === 'locked' && loginState.lockedUntil > Date.now();
  const form = h(
    'form',
    { id: 'login-form', class: 'login-card', novalidate: true, onsubmit: onLogin },
    h(
      'div',
      { class: 'login-head' },
      h('div', { class: 'brand-mark', 'aria-hidden': 'true' }, '灵'),
      h('div', {}, h('h1', {}, t('app.brand')), h('p', { class: 'muted' }, t('login.subtitle'))),
      langSwitch('login-lang'),
    ),
    h('h2', {}, t('login.title')),
    h(
      'label',
      { class: 'field' },
      h('span', {}, t('login.username')),
      h('input', {
        id: 'login-username',
        name: 'username',
        autocomplete: 'username',
        required: true,
        value: loginState.username,
        oninput: (e) => (loginState.username = e.target.value),
      }),
    ),
    h(
      'label',
      { class: 'field' },
      h('span', {}, t('login.password')),
      h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    ),
    h('div', { id: 'login-error', class: err ? 'form-error' : 'form-error hidden', role: 'alert' }, err),
    h(
      'button',
      { id: 'login-submit', type: 'submit', class: 'btn btn-primary btn-block', disabled: loginState.busy || locked },
      loginState.busy ? t('login.busy') : t('login.submit'),
    ),
  );
  replace(root, h('main', { class: 'login-page' }, form));
  const focus = loginState.username ? 'login-password' : 'login-username';
  document.getElementById(focus).focus();
}

function startLockCountdown() {
  clearInterval(lockTimer);
  lockTimer = setInterval(() => {
    const el = document.getElementById('login-error');
    const btn = document.getElementById('login-submit');
    if (!el || loginState.error !== 'locked') return clearInterval(lockTimer);
    if (Date.now() >= loginState.lockedUntil) {
      clearInterval(lockTimer);
      loginState.error = null;
      el.textContent = '';
      el.classList.add('hidden');
      if (btn) btn.disabled = false;
      return;
    }
    el.textContent = loginError();
  }, 1000);
}

async function onLogin(ev) {
  ev.preventDefault();
  ring.unlock(); // A user gesture: allow the ring tone later.
  const username = document.getElementById('login-username').value.trim();
  const password = document.getElementById('login-password').value;
  loginState.username = username;
  if (!username || !password) {
    loginState.error = 'missing';
    return renderLogin();
  }
  loginState.busy = true;
  loginState.error = null;
  renderLogin();
  try {
    const r = await api.login(username, password);
    loginState.busy = false;
    loginState.error = null;
    await startSession(r.user);
  } catch (e) {
    loginState.busy = false;
    if (e.status === 401) {
      loginState.error = 'credentials';
    } else if (e.status === 429) {
      loginState.error = 'locked';
      const retry = Number(e.headers.get('Retry-After'));
      loginState.lockedUntil = Number.isFinite(retry) && retry > 0 ? Date.now() + retry * 1000 : 0;
      if (loginState.lockedUntil) startLockCountdown();
    } else {
      loginState.error = errorText(e);
    }
    renderLogin();
    const pw = document.getElementById('login-password');
    if (pw) pw.value = '';
  }
}

// ---------------------------------------------------------------- shell

async function startSession(user) {
  let config = { not_ready_reasons: [], dispositions: [] };
  try {
    config = (await api.consoleConfig()) || config;
  } catch (e) {
    toast(t('app.error.server', { message: errorText(e) }), 'error');
  }
  const views = {};
  const tabs = [];
  if (user.agent_id) tabs.push('agent');
  if (user.role === 'supervisor' || user.role === 'admin') tabs.push('supervisor');
  if (user.role === 'admin') tabs.push('users');
  session = { user, config, views, tabs, tab: tabs[0] || null };
  renderShell();
  const ctx = { user, config, toast, errorText, bannerSlot: document.getElementById('banner-slot') };
  if (tabs.includes('agent')) {
    views.agent = new AgentDesk(document.getElementById('view-agent'), ctx);
    views.agent.start();
  }
  if (tabs.includes('supervisor')) {
    views.supervisor = new SupervisorView(document.getElementById('view-supervisor'), ctx);
  }
  if (tabs.includes('users')) {
    views.users = new UsersView(document.getElementById('view-users'), ctx);
  }
  showTab(session.tab);
}

function renderShell() {
  const { user, tabs } = session;
  document.title = t('app.title');
  const name = user.display_name || user.username;
  const header = h(
    'header',
    { class: 'topbar' },
    h('div', { class: 'brand' }, h('span', { class: 'brand-mark small', 'aria-hidden': 'true' }, '灵'), h('span', {}, t('app.title'))),
    h(
      'nav',
      { class: 'tabs', role: 'tablist' },
      tabs.map((tab) =>
        h(
          'button',
          {
            type: 'button',
            id: `tab-${tab}`,
            role: 'tab',
            class: tab === session.tab ? 'tab active' : 'tab',
            'aria-selected': tab === session.tab ? 'true' : 'false',
            onclick: () => showTab(tab),
          },
          t(`app.tab.${tab}`),
        ),
      ),
    ),
    h(
      'div',
      { class: 'user' },
      h('span', { id: 'user-name', class: 'user-name' }, name),
      h('span', { class: 'role-badge' }, t(`role.${user.role}`)),
      langSwitch('lang-select'),
      h('button', { id: 'logout', type: 'button', class: 'btn btn-ghost', onclick: onLogout }, t('app.logout')),
    ),
  );
  const main = h(
    'main',
    { class: 'shell' },
    h('div', { id: 'banner-slot' }),
    tabs.length === 0 ? h('p', { class: 'empty-view' }, t('app.no_view', { role: t(`role.${user.role}`) })) : null,
    h('section', { id: 'view-agent', class: 'view', hidden: true }),
    h('section', { id: 'view-supervisor', class: 'view', hidden: true }),
    h('section', { id: 'view-users', class: 'view', hidden: true }),
  );
  replace(root, header, main);
}

function showTab(tab) {
  if (!session || !tab) return;
  session.tab = tab;
  for (const name of session.tabs) {
    const btn = document.getElementById(`tab-${name}`);
    if (btn) {
      btn.classList.toggle('active', name === tab);
      btn.setAttribute('aria-selected', name === tab ? 'true' : 'false');
    }
    const view = document.getElementById(`view-${name}`);
    if (view) view.hidden = name !== tab;
  }
  // The agent desk always runs (it is the phone); the other views work only while shown.
  for (const name of ['supervisor', 'users']) {
    const v = session.views[name];
    if (v) name === tab ? v.start() : v.stop();
  }
}

async function onLogout() {
  await endSession();
  await api.logout();
  renderLogin();
}

async function endSession() {
  if (!session) return;
  for (const v of Object.values(session.views)) v.destroy();
  session = null;
  ring.stop();
}

onLangChange(() => {
  if (!session) return renderLogin();
  // Rebuild the shell in the new language; views keep their state and re-attach.
  const views = session.views;
  renderShell();
  for (const [name, v] of Object.entries(views)) document.getElementById(`view-${name}`).replaceWith(v.el);
  const slot = document.getElementById('banner-slot');
  for (const v of Object.values(views)) {
    v.ctx.bannerSlot = slot;
    v.render();
  }
  showTab(session.tab);
});

api.setUnauthorizedHandler(async () => {
  if (!session) return;
  await endSession();
  loginState.error = t('app.error.session');
  renderLogin();
});

async function boot() {
  try {
    const user = await api.me();
    if (user) await startSession(user);
    else renderLogin();
  } catch (e) {
    loginState.error = errorText(e);
    renderLogin();
  }
}

// Browsers start audio only after a user gesture: any click or key allows the ring tone
// (also after a reload, when no login form was submitted).
for (const ev of ['pointerdown', 'keydown']) document.addEventListener(ev, ring.unlock, { passive: true });

boot();
