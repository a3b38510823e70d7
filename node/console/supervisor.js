// Supervisor view: live queues (waiting, longest wait, service level), agents and their
// states, live calls; refreshed every 2 s from /api/v1/supervisor/overview while shown.

import { t, stateName, clock, label } from './i18n.js';
import * as api from './api.js';
import { h, replace, duration } from './dom.js';

const REFRESH_MS = 2000;

/** The supervisor view. */
export class SupervisorView {
  constructor(el, ctx) {
    /** The view's root element. */
    this.el = el;
    /** Shared context (config for reason labels, errorText). */
    this.ctx = ctx;
    /** The last overview received, and when (browser clock). */
    this.data = null;
    this.at = 0;
    /** The last failure, shown until the next success. */
    this.error = null;
    this.timer = null;
    this.inFlight = false;
    this.render();
  }

  /** Starts refreshing (when the tab is shown). */
  start() {
    if (this.timer) return;
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  /** Stops refreshing (tab hidden). */
  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  /** Stops for good. */
  destroy() {
    this.stop();
  }

  async refresh() {
    if (this.inFlight) return;
    this.inFlight = true;
    try {
      this.data = await api.overview();
      this.at = Date.now();
      // The switch's clock may differ from this PC's: measure durations on the switch's.
      this.skew = this.data && this.data.now_ms ? this.data.now_ms - this.at : 0;
      this.error = null;
    } catch (e) {
      this.error = this.ctx.errorText(e);
    }
    this.inFlight = false;
    this.render();
  }

  /** Rebuilds the view from the last overview. */
  render() {
    const d = this.data || { queues: [], agents: [], calls: [] };
    const queues = d.queues || [];
    const agents = d.agents || [];
    const calls = d.calls || [];
    const now = Date.now() + (this.skew || 0);
    const reasons = this.ctx.config.not_ready_reasons || [];
    const waiting = queues.reduce((n, q) => n + (q.waiting || 0), 0);
    const ready = agents.filter((a) => a.state === 'ready').length;
    const status = this.error
      ? h('span', { id: 'sup-status', class: 'error-text' }, t('sup.stale', { time: this.at ? clock(this.at) : '—', message: this.error }))
      : h('span', { id: 'sup-status', class: 'muted small' }, this.at ? t('sup.updated', { time: clock(this.at) }) : t('app.loading'));
    replace(
      this.el,
      h(
        'div',
        { class: 'sup' },
        h('div', { class: 'sup-head' }, h('h1', {}, t('sup.title')), status),
        h(
          'div',
          { class: 'tiles' },
          tile('tile-waiting', t('sup.total_waiting'), waiting, waiting > 0 ? 'warn' : ''),
          tile('tile-ready', t('sup.total_ready'), ready, ready === 0 ? 'warn' : 'ok'),
          tile('tile-calls', t('sup.total_calls'), calls.length, ''),
        ),
        h(
          'section',
          { class: 'card' },
          h('h2', {}, t('sup.queues')),
          table(
            'sup-queues',
            ['sup.queue', 'sup.waiting', 'sup.longest', 'sup.service_level', 'sup.answered', 'sup.abandoned', 'sup.agents_ready'],
            queues.map((q) =>
              h(
                'tr',
                { dataset: { queue: q.id } },
                h('td', {}, q.name && q.name !== q.id ? `${q.name} (${q.id})` : q.id),
                h('td', { class: q.waiting > 0 ? 'num warn-text' : 'num' }, q.waiting ?? 0),
                h('td', { class: 'num' }, duration(q.longest_wait_ms || 0)),
                h('td', { class: 'num' }, q.service_level_pct == null ? '—' : `${Math.round(q.service_level_pct)}%`),
                h('td', { class: 'num' }, q.answered ?? 0),
                h('td', { class: 'num' }, q.abandoned ?? 0),
                h('td', { class: 'num' }, q.agents_ready ?? 0),
              ),
            ),
            t('sup.none_queues'),
          ),
        ),
        h(
          'div',
          { class: 'sup-grid' },
          h(
            'section',
            { class: 'card' },
            h('h2', {}, t('sup.agents')),
            table(
              'sup-agents',
              ['sup.agent', 'sup.state', 'sup.reason', 'sup.since', 'sup.call', 'sup.channel'],
              agents.map((a) => {
                const r = a.reason ? reasons.find((x) => x.code === a.reason) : null;
                return h(
                  'tr',
                  { dataset: { agent: a.id, state: a.state } },
                  h('td', {}, a.name && a.name !== a.id ? `${a.name} (${a.id})` : a.id),
                  h('td', {}, h('span', { class: `pill pill-${a.state}` }, stateName(a.state))),
                  h('td', {}, r ? label(r) : a.reason || ''),
                  h('td', { class: 'num' }, a.since_ms ? duration(now - a.since_ms) : ''),
                  h('td', { class: 'mono small' }, a.call_id ? shortId(a.call_id) : ''),
                  h('td', {}, a.web ? h('span', { class: 'tag tag-web' }, t('sup.web')) : h('span', { class: 'tag' }, t('sup.sip'))),
                );
              }),
              t('sup.none_agents'),
            ),
          ),
          h(
            'section',
            { class: 'card' },
            h('h2', {}, t('sup.calls')),
            table(
              'sup-calls',
              ['sup.caller', 'sup.queue', 'sup.agent', 'sup.phase', 'sup.duration', 'sup.node'],
              calls.map((c) =>
                h(
                  'tr',
                  { dataset: { callId: c.call_id, phase: c.phase } },
                  h('td', {}, c.caller || ''),
                  h('td', {}, c.queue || ''),
                  h('td', {}, c.agent || '—'),
                  h('td', {}, h('span', { class: `pill pill-call-${c.phase}` }, t(`phase.${c.phase}`) === `phase.${c.phase}` ? c.phase : t(`phase.${c.phase}`))),
                  h('td', { class: 'num' }, c.started_ms ? duration(now - c.started_ms) : ''),
                  h('td', { class: 'mono small' }, c.owner || ''),
                ),
              ),
              t('sup.none_calls'),
            ),
          ),
        ),
      ),
    );
  }
}

function tile(id, title, value, tone) {
  return h('div', { id, class: `tile ${tone ? `tile-${tone}` : ''}` }, h('div', { class: 'tile-value' }, value), h('div', { class: 'tile-title' }, title));
}

function table(id, heads, rows, empty) {
  return h(
    'div',
    { class: 'table-wrap' },
    h('table', { id, class: 'table' }, h('thead', {}, h('tr', {}, heads.map((k) => h('th', {}, t(k))))), h('tbody', {}, rows)),
    rows.length === 0 ? h('p', { class: 'muted empty' }, empty) : null,
  );
}

function shortId(id) {
  return id.length > 14 ? `${id.slice(0, 12)}…` : id;
}
