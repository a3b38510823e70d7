// Users view (admins): who may sign in to the console, with which role and agent; create a
// user (an agent's web login, a supervisor, another admin) or remove one.

import { t, dateTime } from './i18n.js';
import * as api from './api.js';
import { h, replace } from './dom.js';

const ROLES = ['agent', 'supervisor', 'admin'];

/** The users view. */
export class UsersView {
  constructor(el, ctx) {
    /** The view's root element. */
    this.el = el;
    /** Shared context (user, toast, errorText). */
    this.ctx = ctx;
    /** Users as last listed, and the agents to choose from. */
    this.users = null;
    this.agents = [];
    /** The new-user form's fields, kept across language switches. */
    this.form = { username: '', display_name: '', role: 'agent', agent_id: '', password: '' };
    this.error = null;
    this.busy = false;
    this.render();
  }

  /** Reloads the lists each time the tab is shown. */
  start() {
    this.load();
  }

  stop() {}

  destroy() {}

  async load() {
    try {
      const [users, agents] = await Promise.all([api.users(), api.agents().catch(() => [])]);
      this.users = users || [];
      this.agents = agents || [];
      this.error = null;
    } catch (e) {
      this.users = this.users || [];
      this.error = this.ctx.errorText(e);
    }
    this.render();
  }

  async create(ev) {
    ev.preventDefault();
    const f = this.form;
    const body = {
      username: f.username.trim(),
      display_name: f.display_name.trim() || undefined,
      role: f.role,
      agent_id: f.role === 'agent' || f.agent_id.trim() ? f.agent_id.trim() || null : null,
      password: f.password,
    };
    if (!body.username || !body.password || (f.role === 'agent' && !body.agent_id)) {
      this.error = t('users.required');
      return this.render();
    }
    this.busy = true;
    this.error = null;
    this.render();
    try {
      await api.createUser(body);
      this.ctx.toast(t('users.done', { username: body.username }), 'ok');
      this.form = { username: '', display_name: '', role: f.role, agent_id: '', password: '' };
      await this.load();
    } catch (e) {
      this.error = t('users.error', { message: this.ctx.errorText(e) });
    }
    this.busy = false;
    this.render();
  }

  async remove(username) {
    if (!window.confirm(t('users.confirm_delete', { username }))) return;
    try {
      await api.deleteUser(username);
      this.ctx.toast(t('users.deleted', { username }), 'ok');
    } catch (e) {
      this.ctx.toast(t('users.error', { message: this.ctx.errorText(e) }), 'error');
    }
    this.load();
  }

  /** Rebuilds the view (load, language change). */
  render() {
    const f = this.form;
    const field = (id, key, input) => h('label', { class: 'field' }, h('span', {}, t(key)), input);
    const bind = (name) => (e) => (f[name] = e.target.value);
    replace(
      this.el,
      h(
        'div',
        { class: 'users' },
        h(
          'section',
          { class: 'card' },
          h('h2', {}, t('users.title')),
          this.users === null
            ? h('p', { class: 'muted' }, t('app.loading'))
            : h(
                'div',
                { class: 'table-wrap' },
                h(
                  'table',
                  { id: 'users-table', class: 'table' },
                  h('thead', {}, h('tr', {}, ['users.username', 'users.display_name', 'users.role', 'users.agent', 'users.created', ''].map((k) => h('th', {}, k ? t(k) : '')))),
                  h(
                    'tbody',
                    {},
                    this.users.map((u) =>
                      h(
                        'tr',
                        { dataset: { user: u.username } },
                        h('td', { class: 'mono' }, u.username),
                        h('td', {}, u.display_name || ''),
                        h('td', {}, h('span', { class: 'tag' }, t(`role.${u.role}`))),
                        h('td', {}, u.agent_id || '—'),
                        h('td', { class: 'nowrap muted small' }, dateTime(u.created_ms)),
                        h(
                          'td',
                          { class: 'num' },
                          u.username === this.ctx.user.username
                            ? null
                            : h('button', { type: 'button', class: 'btn btn-small', onclick: () => this.remove(u.username) }, t('users.delete')),
                        ),
                      ),
                    ),
                  ),
                ),
              ),
        ),
        h(
          'section',
          { class: 'card users-new' },
          h('h2', {}, t('users.new')),
          h(
            'form',
            { id: 'user-form', class: 'form-grid', novalidate: true, onsubmit: (e) => this.create(e) },
            field('user-username', 'users.username', h('input', { id: 'user-username', autocomplete: 'off', required: true, maxlength: 64, value: f.username, oninput: bind('username') })),
            field('user-display', 'users.display_name', h('input', { id: 'user-display', maxlength: 100, value: f.display_name, oninput: bind('display_name') })),
            field(
              'user-role',
              'users.role',
              h(
                'select',
                { id: 'user-role', onchange: (e) => { f.role = e.target.value; this.render(); } },
                ROLES.map((r) => h('option', { value: r, selected: r === f.role }, t(`role.${r}`))),
              ),
            ),
            field(
              'user-agent',
              'users.agent',
              h('input', { id: 'user-agent', list: 'user-agents', required: f.role === 'agent', placeholder: f.role === 'agent' ? '' : t('users.optional'), value: f.agent_id, oninput: bind('agent_id') }),
            ),
            h('datalist', { id: 'user-agents' }, this.agents.map((a) => h('option', { value: a.id }, a.name || a.id))),
            field('user-password', 'users.password', h('input', { id: 'user-password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8, value: f.password, oninput: bind('password') })),
            h('p', { class: 'muted small form-wide' }, t('users.password_hint')),
            this.error ? h('div', { id: 'user-error', class: 'form-error form-wide', role: 'alert' }, this.error) : null,
            h('div', { class: 'form-wide' }, h('button', { id: 'user-submit', type: 'submit', class: 'btn btn-primary', disabled: this.busy }, t('users.create'))),
          ),
        ),
      ),
    );
  }
}
