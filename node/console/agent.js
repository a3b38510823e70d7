// The agent desk: my state (ready / not ready with a reason), the browser phone (ring,
// answer, hang up, hold, mute, keypad, blind transfer, call timer), the screen pop and the
// wrap-up form, beside the knowledge base.

import { t, lang, label, stateName, outcomeName, endReason, dateTime } from './i18n.js';
import * as api from './api.js';
import { h, replace, duration, icon } from './dom.js';
import * as ring from './ring.js';
import { KnowledgePanel } from './kb.js';

const POLL_MS = 2000;
const DIGITS = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];

/** The agent desk view. */
export class AgentDesk {
  constructor(el, ctx) {
    /** The view's root element (kept across language switches). */
    this.el = el;
    /** Shared context: user, console config, toast, errorText, bannerSlot. */
    this.ctx = ctx;
    this.agentId = ctx.user.agent_id;
    /** The agent as the switch last reported it. */
    this.agent = null;
    /** Not-ready reason chosen in the select. */
    this.reason = (ctx.config.not_ready_reasons[0] || {}).code || '';
    /** Phone: "offline" | "connecting" | "registered"; and the last error. */
    this.phoneStatus = 'offline';
    this.phoneError = null;
    this.phone = null;
    /** The call in progress: {call_id, from, queue, phase, answeredAt, held, muted, digits}. */
    this.call = null;
    /** Screen pop: {call_id, from, queue, data, error}. */
    this.pop = null;
    /** Calls waiting for their wrap-up form, oldest first. */
    this.wrapups = [];
    /** Transfer form: mode "queue" | "agent", target, and the lists to choose from. */
    this.transfer = { mode: 'queue', queue: '', agent: '', queues: [], agents: [] };
    this.keypadOpen = false;
    this.timers = [];
    this.destroyed = false;
    this.kb = new KnowledgePanel(ctx);
    window.lingxiConsole = {
      /** The softphone, for diagnostics and tests. */
      softphone: () => this.phone,
      /** Audio RTP packet counts from the softphone's getStats: {inbound, outbound}. */
      rtpStats: () => this.rtpStats(),
    };
  }

  /** Builds the view, connects the phone and starts polling the agent's state. */
  start() {
    this.render();
    this.refreshAgent();
    this.loadTransferTargets();
    this.timers.push(setInterval(() => this.refreshAgent(), POLL_MS));
    this.timers.push(setInterval(() => this.tick(), 1000));
    this.connectPhone();
  }

  /** Stops timers and closes the phone (the switch unregisters it after a short grace). */
  destroy() {
    this.destroyed = true;
    for (const id of this.timers) clearInterval(id);
    ring.stop();
    if (this.phone) {
      try {
        this.phone.disconnect();
      } catch (_) {
        // Already closed.
      }
    }
    this.phone = null;
    if (this.ctx.bannerSlot) replace(this.ctx.bannerSlot);
    delete window.lingxiConsole;
  }

  // ------------------------------------------------------------ phone

  /**
   * Loads softphone.js and connects the phone. The Softphone reopens a dropped socket by
   * itself; this only starts it (again after a failed load, from the Reconnect button).
   */
  async connectPhone() {
    if (this.destroyed || this.phone || this.phoneStatus === 'connecting') return;
    this.phoneStatus = 'connecting';
    this.phoneError = null;
    this.renderPhoneStatus();
    let Softphone;
    try {
      ({ Softphone } = await import('./softphone.js'));
    } catch (e) {
      this.phoneStatus = 'offline';
      return this.onPhoneError({ message: e && e.message ? e.message : String(e) });
    }
    if (this.destroyed) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const phone = new Softphone({ url: `${proto}//${location.host}/api/v1/ws`, reconnect: true });
    this.phone = phone;
    const on = (name, fn) => phone.addEventListener(name, (e) => this.phone === phone && fn(e.detail || {}));
    on('registered', () => {
      this.phoneStatus = 'registered';
      this.phoneError = null;
      this.renderPhoneStatus();
      this.refreshAgent();
    });
    on('connection', (d) => (d.connected ? this.onConnected() : this.onDisconnected()));
    on('incoming', (d) => this.onIncoming(d));
    on('state', (d) => this.onPhoneState(d.state));
    on('ended', (d) => this.onEnded(d));
    on('transferred', () => this.ctx.toast(t('transfer.done'), 'ok'));
    on('error', (d) => this.onPhoneError(d));
    try {
      await phone.connect();
    } catch (e) {
      // The Softphone keeps retrying; say why it is not connected yet.
      this.phoneStatus = 'connecting';
      this.phoneError = e && e.message ? e.message : String(e);
      this.renderPhoneStatus();
    }
  }

  onConnected() {
    if (this.phoneStatus !== 'registered') this.phoneStatus = 'connected';
    this.phoneError = null;
    this.renderPhoneStatus();
  }

  onPhoneError(d) {
    const message = (lang() === 'zh' && d.message_zh) || d.message || 'error';
    this.phoneError = message;
    this.renderPhoneStatus();
    this.ctx.toast(t('phone.error', { message }), 'error');
  }

  /** The socket dropped: the Softphone reconnects by itself; the call's audio is gone. */
  onDisconnected() {
    this.phoneStatus = 'connecting';
    if (this.call) this.onEnded({ call_id: this.call.call_id, reason: 'disconnected' });
    this.renderPhoneStatus();
    this.refreshAgent();
  }

  onIncoming(d) {
    this.call = { call_id: d.call_id, from: d.from || '', queue: d.queue || '', phase: 'ringing', answeredAt: 0, held: false, muted: false, digits: '' };
    this.keypadOpen = false;
    ring.start();
    this.loadPop(this.call);
    this.renderCall();
    this.renderBanner();
    this.refreshAgent();
  }

  onPhoneState(state) {
    if (!this.call) return;
    if (state !== 'ringing') ring.stop();
    if (state === 'talking' || state === 'held') {
      if (!this.call.answeredAt) this.call.answeredAt = Date.now();
      this.call.held = state === 'held';
    }
    if (state && state !== 'idle') this.call.phase = state;
    this.renderCall();
    this.renderBanner();
  }

  onEnded(d) {
    ring.stop();
    const call = this.call;
    if (!call || (d.call_id && call.call_id && d.call_id !== call.call_id)) return;
    this.call = null;
    if (call.answeredAt) {
      this.wrapups.push({ call_id: call.call_id, from: call.from, queue: call.queue, disposition: '', note: '', ready: true, busy: false, error: null });
    }
    this.ctx.toast(d.reason ? t('call.ended_reason', { reason: endReason(d.reason) }) : t('call.ended'));
    this.renderCall();
    this.renderBanner();
    this.renderWrapup();
    this.refreshAgent();
  }

  /** Runs a phone action; a throw is shown (a `false` result was already reported by an "error" event). */
  async act(fn) {
    if (!this.phone) return this.onPhoneError({ message: t('phone.offline') });
    try {
      return await fn();
    } catch (e) {
      this.onPhoneError({ message: e && e.message ? e.message : String(e) });
      return false;
    }
  }

  answer() {
    ring.stop();
    if (this.call) this.call.phase = 'connecting';
    this.renderCall();
    this.renderBanner();
    this.act(() => this.phone.answer());
  }

  hangup() {
    ring.stop();
    this.act(() => this.phone.hangup());
  }

  /** Refuses the ringing call (it goes back to the queue for another agent). */
  decline() {
    ring.stop();
    this.act(() => (typeof this.phone.reject === 'function' ? this.phone.reject() : this.phone.hangup()));
  }

  /** Hold or resume; the switch confirms with a "state" event (held / talking). */
  toggleHold() {
    if (!this.call) return;
    const on = !this.call.held;
    this.act(() => this.phone.hold(on));
  }

  toggleMute() {
    if (!this.call) return;
    const on = !this.call.muted;
    this.act(async () => {
      await this.phone.mute(on);
      if (this.call) this.call.muted = on;
      this.renderCall();
    });
  }

  dtmf(digit) {
    if (!this.call) return;
    this.call.digits = (this.call.digits + digit).slice(-24);
    const shown = this.el.querySelector('#dtmf-display');
    if (shown) shown.textContent = this.call.digits;
    this.act(() => this.phone.dtmf(digit));
  }

  async doTransfer(ev) {
    ev.preventDefault();
    const tr = this.transfer;
    const target = tr.mode === 'queue' ? { queue: tr.queue } : { agent: tr.agent.trim() };
    if (!target.queue && !target.agent) return;
    // Sent; the switch confirms with "transferred" (toast) and then ends our leg.
    await this.act(() => this.phone.transfer(target));
  }

  /** Sums audio RTP packet counters from the phone's getStats. */
  async rtpStats() {
    const out = { inbound: 0, outbound: 0, bytes_in: 0, bytes_out: 0 };
    if (!this.phone) return out;
    const report = await this.phone.getStats();
    if (!report) return out;
    report.forEach((s) => {
      if (s.kind && s.kind !== 'audio') return;
      if (s.type === 'inbound-rtp') {
        out.inbound += s.packetsReceived || 0;
        out.bytes_in += s.bytesReceived || 0;
      } else if (s.type === 'outbound-rtp') {
        out.outbound += s.packetsSent || 0;
        out.bytes_out += s.bytesSent || 0;
      }
    });
    return out;
  }

  // ------------------------------------------------------------ agent state

  async refreshAgent() {
    try {
      this.agent = await api.agent(this.agentId);
    } catch (e) {
      if (e.status !== 401) this.agentError = this.ctx.errorText(e);
    }
    this.renderState();
  }

  async setState(state) {
    try {
      const reason = state === 'not_ready' ? this.reason : undefined;
      this.agent = await api.setState(this.agentId, state, reason);
    } catch (e) {
      this.ctx.toast(t('state.error', { message: this.ctx.errorText(e) }), 'error');
    }
    this.renderState();
  }

  async loadTransferTargets() {
    try {
      this.transfer.queues = (await api.queues()) || [];
      if (!this.transfer.queue && this.transfer.queues[0]) this.transfer.queue = this.transfer.queues[0].id;
    } catch (_) {
      this.transfer.queues = [];
    }
    try {
      this.transfer.agents = ((await api.agents()) || []).filter((a) => a.id !== this.agentId);
    } catch (_) {
      this.transfer.agents = [];
    }
    if (this.call) this.renderCall();
  }

  // ------------------------------------------------------------ screen pop and wrap-up

  async loadPop(call) {
    this.pop = { call_id: call.call_id, from: call.from, queue: call.queue, data: null, error: null, loading: true };
    this.renderPop();
    try {
      const data = await api.callContext(call.call_id);
      if (!this.pop || this.pop.call_id !== call.call_id) return;
      this.pop.data = data;
    } catch (e) {
      if (!this.pop || this.pop.call_id !== call.call_id) return;
      this.pop.error = this.ctx.errorText(e);
    }
    this.pop.loading = false;
    this.renderPop();
  }

  async submitWrapup(ev) {
    ev.preventDefault();
    const w = this.wrapups[0];
    if (!w || w.busy) return;
    if (!w.disposition) {
      w.error = t('wrap.required');
      return this.renderWrapup();
    }
    w.busy = true;
    w.error = null;
    this.renderWrapup();
    try {
      await api.disposition(w.call_id, { disposition: w.disposition, note: w.note.trim(), ready: w.ready });
      this.wrapups.shift();
      this.ctx.toast(t('wrap.saved'), 'ok');
      this.refreshAgent();
    } catch (e) {
      w.busy = false;
      w.error = t('wrap.error', { message: this.ctx.errorText(e) });
    }
    this.renderWrapup();
  }

  // ------------------------------------------------------------ rendering

  /** Rebuilds the whole view (start and language change); state is kept. */
  render() {
    replace(
      this.el,
      h(
        'div',
        { class: 'desk' },
        h(
          'div',
          { class: 'col col-left' },
          h('section', { class: 'card', id: 'state-card' }),
          h('section', { class: 'card', id: 'call-panel', 'aria-live': 'polite' }),
        ),
        h(
          'div',
          { class: 'col col-mid' },
          h('section', { class: 'card', id: 'wrapup' }),
          h('section', { class: 'card', id: 'screen-pop' }),
        ),
        h('div', { class: 'col col-right' }, this.kb.el),
      ),
    );
    this.kb.render();
    this.buildState();
    this.renderCall();
    this.renderPop();
    this.renderWrapup();
    this.renderBanner();
  }

  tick() {
    if (this.call && this.call.answeredAt) {
      const el = this.el.querySelector('#call-timer');
      if (el) el.textContent = duration(Date.now() - this.call.answeredAt);
    }
    const since = this.el.querySelector('#agent-since');
    if (since && this.agent && this.agent.state_since_ms) {
      since.textContent = t('state.since', { time: duration(Date.now() - this.agent.state_since_ms) });
    }
  }

  /** Builds the state card (start and language change); `renderState` fills it in. */
  buildState() {
    const card = this.el.querySelector('#state-card');
    if (!card) return;
    const reasons = this.ctx.config.not_ready_reasons || [];
    replace(
      card,
      h('h2', {}, t('state.title')),
      h(
        'div',
        { class: 'state-line' },
        h('span', { id: 'agent-state', class: 'pill' }),
        h('span', { id: 'agent-reason', class: 'muted' }),
        h('span', { id: 'agent-since', class: 'muted small' }),
      ),
      h(
        'div',
        { class: 'state-actions' },
        h('button', { id: 'btn-ready', type: 'button', class: 'btn btn-ok', onclick: () => this.setState('ready') }, t('state.go_ready')),
        h(
          'div',
          { class: 'not-ready-group' },
          h(
            'select',
            { id: 'not-ready-reason', 'aria-label': t('state.reason'), onchange: (e) => (this.reason = e.target.value) },
            reasons.map((r) => h('option', { value: r.code, selected: r.code === this.reason }, label(r))),
          ),
          h('button', { id: 'btn-not-ready', type: 'button', class: 'btn btn-warn', onclick: () => this.setState('not_ready') }, t('state.go_not_ready')),
        ),
      ),
      h('div', { id: 'phone-status-line', class: 'phone-line' }),
    );
    this.renderState();
    this.renderPhoneStatus();
  }

  /** Updates the state card in place (every poll: an open reason list must stay open). */
  renderState() {
    const pill = this.el.querySelector('#agent-state');
    if (!pill) return;
    const a = this.agent;
    const state = a ? a.state : 'unknown';
    const reasons = this.ctx.config.not_ready_reasons || [];
    const reasonEntry = a && a.reason ? reasons.find((r) => r.code === a.reason) : null;
    pill.className = `pill pill-${state}`;
    pill.dataset.state = state;
    pill.textContent = stateName(state);
    this.el.querySelector('#agent-reason').textContent =
      a && a.state === 'not_ready' && a.reason ? (reasonEntry ? label(reasonEntry) : a.reason) : '';
    this.el.querySelector('#agent-since').textContent =
      a && a.state_since_ms ? t('state.since', { time: duration(Date.now() - a.state_since_ms) }) : '';
    this.el.querySelector('#btn-ready').disabled = !(!a || ['not_ready', 'logged_out', 'wrap_up'].includes(state));
    this.el.querySelector('#btn-not-ready').disabled = !(!a || ['ready', 'wrap_up', 'logged_out', 'not_ready'].includes(state));
  }

  renderPhoneStatus() {
    const line = this.el.querySelector('#phone-status-line');
    if (!line) return;
    const key = { offline: 'phone.offline', connecting: 'phone.connecting', connected: 'phone.connected', registered: 'phone.registered' }[this.phoneStatus];
    replace(
      line,
      h('span', { class: `dot dot-${this.phoneStatus}`, 'aria-hidden': 'true' }),
      h('span', { id: 'phone-status', dataset: { status: this.phoneStatus } }, t(key)),
      this.phoneStatus === 'offline' && !this.phone
        ? h('button', { id: 'btn-reconnect', type: 'button', class: 'btn btn-small', onclick: () => this.connectPhone() }, t('phone.reconnect'))
        : null,
      this.phoneError && this.phoneStatus !== 'registered' ? h('div', { class: 'muted small error-text' }, this.phoneError) : null,
    );
  }

  renderBanner() {
    const slot = this.ctx.bannerSlot;
    if (!slot) return;
    const c = this.call;
    // The tab's title rings too, for an agent working in another window.
    document.title = c && c.phase === 'ringing' ? `☎ ${t('call.incoming')} · ${c.from || t('call.unknown_caller')}` : t('app.title');
    if (!c || c.phase !== 'ringing') return replace(slot);
    replace(
      slot,
      h(
        'div',
        { id: 'ring-banner', class: 'ring-banner', role: 'alert' },
        h('span', { class: 'ring-icon' }, icon('phone')),
        h(
          'div',
          { class: 'ring-text' },
          h('strong', {}, t('call.incoming')),
          h('span', { id: 'ring-from' }, c.from || t('call.unknown_caller')),
          c.queue ? h('span', { class: 'muted-inverse' }, `${t('call.queue')}: ${c.queue}`) : null,
        ),
        h(
          'div',
          { class: 'ring-actions' },
          h('button', { id: 'btn-answer', type: 'button', class: 'btn btn-ok btn-large', onclick: () => this.answer() }, t('call.answer')),
          h('button', { id: 'btn-decline', type: 'button', class: 'btn btn-danger', onclick: () => this.decline() }, t('call.decline')),
        ),
      ),
    );
  }

  renderCall() {
    const panel = this.el.querySelector('#call-panel');
    if (!panel) return;
    const c = this.call;
    if (!c) {
      return replace(panel, h('h2', {}, t('phone.title')), h('p', { id: 'call-idle', class: 'muted' }, t('call.none')));
    }
    const phaseKey = { ringing: 'phone.ringing', connecting: 'phone.connecting_call', talking: 'phone.talking', held: 'phone.held' }[c.phase] || 'phone.talking';
    const live = c.phase === 'talking' || c.phase === 'held';
    const tr = this.transfer;
    replace(
      panel,
      h('h2', {}, t('phone.title')),
      h(
        'div',
        { class: 'call-head' },
        h('div', {}, h('div', { id: 'call-from', class: 'call-from' }, c.from || t('call.unknown_caller')), c.queue ? h('div', { class: 'muted small' }, `${t('call.queue')}: ${c.queue}`) : null),
        h(
          'div',
          { class: 'call-status' },
          h('span', { id: 'call-phase', class: `pill pill-call-${c.phase}`, dataset: { phase: c.phase } }, t(phaseKey)),
          h('span', { id: 'call-timer', class: 'timer', title: t('call.timer') }, c.answeredAt ? duration(Date.now() - c.answeredAt) : '00:00'),
        ),
      ),
      h(
        'div',
        { class: 'call-actions' },
        c.phase === 'ringing' ? h('button', { id: 'btn-answer-panel', type: 'button', class: 'btn btn-ok', onclick: () => this.answer() }, t('call.answer')) : null,
        h('button', { id: 'btn-hold', type: 'button', class: c.held ? 'btn btn-toggle on' : 'btn btn-toggle', disabled: !live, 'aria-pressed': c.held ? 'true' : 'false', onclick: () => this.toggleHold() }, c.held ? t('call.unhold') : t('call.hold')),
        h('button', { id: 'btn-mute', type: 'button', class: c.muted ? 'btn btn-toggle on' : 'btn btn-toggle', disabled: !live, 'aria-pressed': c.muted ? 'true' : 'false', onclick: () => this.toggleMute() }, c.muted ? t('call.unmute') : t('call.mute')),
        h('button', { id: 'btn-keypad', type: 'button', class: this.keypadOpen ? 'btn btn-toggle on' : 'btn btn-toggle', disabled: !live, 'aria-expanded': this.keypadOpen ? 'true' : 'false', onclick: () => { this.keypadOpen = !this.keypadOpen; this.renderCall(); } }, t('call.keypad')),
        h('button', { id: 'btn-hangup', type: 'button', class: 'btn btn-danger', onclick: () => this.hangup() }, t('call.hangup')),
      ),
      live && this.keypadOpen
        ? h(
            'div',
            { class: 'keypad-wrap' },
            h('div', { id: 'dtmf-display', class: 'dtmf-display', 'aria-live': 'polite' }, c.digits),
            h('div', { id: 'dtmf-pad', class: 'keypad' }, DIGITS.map((d) => h('button', { type: 'button', class: 'key', dataset: { digit: d }, onclick: () => this.dtmf(d) }, d))),
          )
        : null,
      live
        ? h(
            'form',
            { id: 'transfer-form', class: 'transfer', onsubmit: (e) => this.doTransfer(e) },
            h('h3', {}, t('transfer.title')),
            h(
              'div',
              { class: 'segmented', role: 'radiogroup' },
              ['queue', 'agent'].map((m) =>
                h('button', { type: 'button', id: `transfer-mode-${m}`, role: 'radio', 'aria-checked': tr.mode === m ? 'true' : 'false', class: tr.mode === m ? 'seg on' : 'seg', onclick: () => { tr.mode = m; this.renderCall(); } }, t(`transfer.to_${m}`)),
              ),
            ),
            h(
              'div',
              { class: 'transfer-row' },
              tr.mode === 'queue'
                ? h(
                    'select',
                    { id: 'transfer-queue', 'aria-label': t('transfer.target'), onchange: (e) => (tr.queue = e.target.value) },
                    h('option', { value: '', disabled: true, selected: !tr.queue }, t('transfer.choose_queue')),
                    tr.queues.map((q) => h('option', { value: q.id, selected: q.id === tr.queue }, q.name && q.name !== q.id ? `${q.name} (${q.id})` : q.id)),
                  )
                : h('input', { id: 'transfer-agent', list: 'transfer-agents', placeholder: t('transfer.agent_placeholder'), 'aria-label': t('transfer.target'), value: tr.agent, oninput: (e) => (tr.agent = e.target.value) }),
              h('datalist', { id: 'transfer-agents' }, tr.agents.map((a) => h('option', { value: a.id }, `${a.name || a.id} · ${stateName(a.state)}`))),
              h('button', { id: 'transfer-submit', type: 'submit', class: 'btn btn-primary' }, t('transfer.submit')),
            ),
          )
        : null,
    );
  }

  renderPop() {
    const card = this.el.querySelector('#screen-pop');
    if (!card) return;
    const p = this.pop;
    if (!p) return replace(card, h('h2', {}, t('pop.title')), h('p', { class: 'muted' }, t('pop.empty')));
    const data = p.data || {};
    const caller = callerNumber(data.caller) || p.from || t('call.unknown_caller');
    const callerName = data.caller && typeof data.caller === 'object' ? data.caller.name || data.caller.display_name : null;
    const history = Array.isArray(data.history) ? data.history.filter((c) => c.call_id !== p.call_id) : [];
    const dispositions = this.ctx.config.dispositions || [];
    replace(
      card,
      h('h2', {}, t('pop.title')),
      h(
        'div',
        { class: 'pop-head', dataset: { callId: p.call_id || '' } },
        h('div', { class: 'avatar' }, icon('person')),
        h(
          'div',
          {},
          h('div', { id: 'pop-caller', class: 'pop-caller' }, callerName ? `${callerName} · ${caller}` : caller),
          h('div', { class: 'muted small' }, [p.queue || (data.call && data.call.queue) ? `${t('call.queue')}: ${p.queue || data.call.queue}` : null]),
        ),
      ),
      p.loading ? h('p', { class: 'muted' }, t('app.loading')) : null,
      p.error ? h('p', { class: 'error-text' }, t('pop.error', { message: p.error })) : null,
      !p.loading && !p.error && history.length === 0 ? h('p', { id: 'pop-first', class: 'muted' }, t('pop.first_contact')) : null,
      history.length
        ? h(
            'div',
            { class: 'history-wrap' },
            h('h3', {}, t('pop.history', { count: history.length })),
            h(
              'ol',
              { id: 'pop-history', class: 'history' },
              history.map((c) => {
                const d = dispositions.find((x) => x.code === c.disposition);
                return h(
                  'li',
                  { dataset: { callId: c.call_id || '' } },
                  h(
                    'div',
                    { class: 'history-meta' },
                    h('span', { class: 'history-when' }, dateTime(c.arrived_ms)),
                    c.disposition ? h('span', { class: 'pill pill-disposition', title: t('pop.disposition') }, d ? label(d) : c.disposition) : null,
                    h('span', { class: 'muted', title: t('pop.outcome') }, outcomeName(c.outcome)),
                    h('span', { class: 'muted', title: t('pop.agent') }, `${t('pop.agent')} ${c.agent || '—'}`),
                    h('span', { class: 'muted num', title: t('pop.talk') }, `${t('pop.talk')} ${duration((c.talk_secs || 0) * 1000)}`),
                  ),
                  c.note ? h('p', { class: 'history-note' }, c.note) : null,
                );
              }),
            ),
          )
        : null,
    );
  }

  renderWrapup() {
    const card = this.el.querySelector('#wrapup');
    if (!card) return;
    const w = this.wrapups[0];
    card.hidden = !w;
    if (!w) return replace(card);
    const dispositions = this.ctx.config.dispositions || [];
    replace(
      card,
      h(
        'form',
        { id: 'wrapup-form', class: 'wrapup', novalidate: true, onsubmit: (e) => this.submitWrapup(e), dataset: { callId: w.call_id } },
        h('h2', {}, t('wrap.title')),
        h('p', { class: 'muted' }, t('wrap.call', { caller: w.from || t('call.unknown_caller') })),
        h(
          'label',
          { class: 'field' },
          h('span', {}, t('wrap.disposition')),
          h(
            'select',
            { id: 'wrapup-disposition', required: true, onchange: (e) => (w.disposition = e.target.value) },
            h('option', { value: '', disabled: true, selected: !w.disposition }, t('wrap.choose')),
            dispositions.map((d) => h('option', { value: d.code, selected: d.code === w.disposition }, label(d))),
          ),
        ),
        h(
          'label',
          { class: 'field' },
          h('span', {}, t('wrap.note')),
          h('textarea', { id: 'wrapup-note', rows: 4, maxlength: 2000, placeholder: t('wrap.note_placeholder'), value: w.note, oninput: (e) => (w.note = e.target.value) }),
        ),
        h(
          'label',
          { class: 'check' },
          h('input', { id: 'wrapup-ready', type: 'checkbox', checked: w.ready, onchange: (e) => (w.ready = e.target.checked) }),
          h('span', {}, t('wrap.ready_after')),
        ),
        w.error ? h('div', { id: 'wrapup-error', class: 'form-error', role: 'alert' }, w.error) : null,
        h('button', { id: 'wrapup-submit', type: 'submit', class: 'btn btn-primary', disabled: w.busy }, t('wrap.submit')),
      ),
    );
  }
}

/** The caller's number from the context's `caller` (a string or an object). */
function callerNumber(caller) {
  if (!caller) return '';
  if (typeof caller === 'string') return caller;
  return caller.number || caller.caller || caller.id || '';
}
