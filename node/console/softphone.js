// Lingxi web phone: the browser side of the node's WebRTC gateway.
// 灵犀网页电话：节点 WebRTC 网关的浏览器端。
//
// Plain ES module, no build step. Two classes:
//   Softphone — an agent's phone over /api/v1/ws (authenticated by the session cookie or a
//               token). Incoming calls ring here; answer/hangup/hold/mute/dtmf/transfer.
//   WebCaller — a customer's "call us" button over /api/v1/webcall/ws (public).
// The JSON messages are documented in PROTOCOL.md beside this file.
//
// Events (CustomEvent, payload in `detail`):
//   Softphone: "registered" {agent, expires}, "incoming" {call_id, from, queue},
//              "state" {state}, "ended" {call_id, reason}, "transferred" {target},
//              "error" {message, message_zh}, "connection" {connected}
//   WebCaller: "state" {state}, "ended" {call_id, reason}, "error" {message, message_zh}
// States: "idle" | "ringing" | "connecting" | "talking" | "held".

/** Default WebSocket URL for a path on this page's host. */
function wsUrl(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

/** Waits for ICE gathering to finish (host candidates: milliseconds), at most `ms`. */
function gathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener('icegatheringstatechange', check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * One call's media in the browser: microphone → RTCPeerConnection → remote audio playing.
 * The browser makes the offer (non-trickle: candidates included); the node answers.
 */
class MediaSession {
  constructor() {
    this.pc = null;
    this.stream = null;
    this.audio = null;
  }

  /** Opens the microphone and returns the complete SDP offer. */
  async offer() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    this.pc = new RTCPeerConnection({ iceServers: [] });
    for (const track of this.stream.getAudioTracks()) this.pc.addTrack(track, this.stream);
    this.pc.addEventListener('track', (ev) => {
      if (!this.audio) {
        this.audio = new Audio();
        this.audio.autoplay = true;
      }
      this.audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      this.audio.play().catch(() => { /* autoplay may need a gesture; the user clicked */ });
    });
    const offer = await this.pc.createOffer({ offerToReceiveAudio: true });
    await this.pc.setLocalDescription(offer);
    await gathered(this.pc, 2000);
    return this.pc.localDescription.sdp;
  }

  /** Applies the node's answer. */
  async answer(sdp) {
    if (!this.pc) return;
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
  }

  mute(on) {
    if (!this.stream) return;
    for (const t of this.stream.getAudioTracks()) t.enabled = !on;
  }

  async stats() {
    return this.pc ? this.pc.getStats() : null;
  }

  close() {
    if (this.pc) this.pc.close();
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    if (this.audio) { this.audio.srcObject = null; }
    this.pc = null;
    this.stream = null;
  }
}

/** Shared WebSocket plumbing: JSON in and out, events, state. */
class Line extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this._state = 'idle';
    this.media = null;
    this.muted = false;
  }

  get state() { return this._state; }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  setState(state) {
    if (this._state === state) return;
    this._state = state;
    this.emit('state', { state });
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      this.emit('error', { message: 'not connected to the switch', message_zh: '未连接到交换机' });
      return false;
    }
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Opens the socket; resolves on the node's "hello", rejects if it closes first. */
  open() {
    return new Promise((resolve, reject) => {
      let hello = false;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.addEventListener('message', (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        if (msg.type === 'hello' && !hello) {
          hello = true;
          this.id = msg.id;
          resolve(msg);
        }
        this.onMessage(msg);
      });
      ws.addEventListener('close', (ev) => {
        if (!hello) reject(new Error(`WebSocket closed before hello (code ${ev.code})`));
        this.onClose(ev);
      });
      ws.addEventListener('error', () => { /* close follows */ });
    });
  }

  async onMessage(msg) {
    switch (msg.type) {
      case 'sdp':
        try { await this.media?.answer(msg.sdp); } catch (e) {
          this.emit('error', { message: `cannot apply the answer: ${e}`, message_zh: `无法应用应答：${e}` });
        }
        break;
      case 'state':
        this.setState(msg.state);
        break;
      case 'ended':
        this.endMedia();
        this.emit('ended', { call_id: msg.call_id, reason: msg.reason });
        this.setState('idle');
        break;
      case 'error':
        this.emit('error', { message: msg.message, message_zh: msg.message_zh });
        break;
      default:
        break;
    }
  }

  onClose() {}

  endMedia() {
    if (this.media) this.media.close();
    this.media = null;
    this.muted = false;
  }

  mute(on) {
    this.muted = !!on;
    this.media?.mute(this.muted);
  }

  dtmf(digit) { return this.send({ type: 'dtmf', digit: String(digit) }); }

  async getStats() { return this.media ? this.media.stats() : null; }
}

/** An agent's phone. */
export class Softphone extends Line {
  /**
   * @param {{url?: string, token?: string, reconnect?: boolean}} opts — `url` defaults to this
   *   host's /api/v1/ws; `token` is added as ?token= (else the session cookie is used);
   *   `reconnect` (default true) reopens a dropped socket every few seconds.
   */
  constructor({ url, token, reconnect = true } = {}) {
    let u = url || wsUrl('/api/v1/ws');
    if (token) u += (u.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
    super(u);
    this.reconnect = reconnect;
    this.closing = false;
    this.call = null;
  }

  /** Connects (and registers the agent's phone with the switch). */
  async connect() {
    this.closing = false;
    await this.open();
    this.emit('connection', { connected: true });
  }

  /** Closes the phone; the node unregisters it after a short grace. */
  disconnect() {
    this.closing = true;
    this.endMedia();
    if (this.ws) this.ws.close();
  }

  onClose() {
    this.emit('connection', { connected: false });
    if (this.call) {
      // The node keeps the call for the grace period; we lost the page's side of it.
      this.endMedia();
    }
    if (this.reconnect && !this.closing) {
      setTimeout(() => { if (!this.closing) this.open().then(() => this.emit('connection', { connected: true }), () => this.onClose()); }, 3000);
    }
  }

  async onMessage(msg) {
    switch (msg.type) {
      case 'registered':
        this.emit('registered', { agent: msg.agent, expires: msg.expires });
        return;
      case 'incoming':
        this.call = { call_id: msg.call_id, from: msg.from, queue: msg.queue };
        this.emit('incoming', { call_id: msg.call_id, from: msg.from, queue: msg.queue });
        return;
      case 'transferred':
        this.emit('transferred', { target: msg.target });
        return;
      case 'ended':
        this.call = null;
        break;
      default:
        break;
    }
    await super.onMessage(msg);
  }

  /** Answers the ringing call: microphone, WebRTC offer to the node, audio plays. */
  async answer() {
    if (this._state !== 'ringing') throw new Error(`no ringing call (state ${this._state})`);
    this.endMedia();
    this.media = new MediaSession();
    let sdp;
    try {
      sdp = await this.media.offer();
    } catch (e) {
      this.endMedia();
      this.emit('error', { message: `microphone or WebRTC unavailable: ${e}`, message_zh: `麦克风或 WebRTC 不可用：${e}` });
      this.send({ type: 'reject' });
      throw e;
    }
    this.send({ type: 'answer', sdp });
  }

  /** Refuses the ringing call. */
  reject() { return this.send({ type: 'reject' }); }

  /** Ends the call (or refuses it while it rings). */
  hangup() {
    const sent = this.send({ type: 'hangup' });
    this.endMedia();
    return sent;
  }

  /** Puts the call on hold (true) or resumes it (false). */
  hold(on) { return this.send({ type: 'hold', on: !!on }); }

  /** Blind transfer: {queue: "sales"} or {agent: "1002"}. */
  transfer(target) {
    const t = target || {};
    if ((t.queue ? 1 : 0) + (t.agent ? 1 : 0) !== 1) {
      this.emit('error', { message: 'transfer needs a queue or an agent', message_zh: '转接需要指定队列或座席' });
      return false;
    }
    return this.send({ type: 'transfer', ...(t.queue ? { queue: String(t.queue) } : { agent: String(t.agent) }) });
  }
}

/** A customer's call to a queue ("call us"). */
export class WebCaller extends Line {
  /** @param {{url?: string}} opts — `url` defaults to this host's /api/v1/webcall/ws. */
  constructor({ url } = {}) {
    super(url || wsUrl('/api/v1/webcall/ws'));
  }

  /** Calls `queue` (id or extension): microphone, socket, offer; resolves once sent. */
  async call(queue) {
    if (this._state !== 'idle') throw new Error(`already in a call (state ${this._state})`);
    this.setState('connecting');
    this.media = new MediaSession();
    try {
      const sdp = await this.media.offer();
      await this.open();
      this.send({ type: 'call', queue: String(queue), sdp });
    } catch (e) {
      this.endMedia();
      this.setState('idle');
      this.emit('error', { message: `cannot start the call: ${e}`, message_zh: `无法发起呼叫：${e}` });
      throw e;
    }
  }

  /** Hangs up. */
  hangup() {
    this.send({ type: 'hangup' });
    this.endMedia();
    if (this.ws) this.ws.close();
  }

  onClose() {
    if (this._state !== 'idle') {
      this.endMedia();
      this.emit('ended', { call_id: '', reason: 'disconnected' });
      this.setState('idle');
    }
  }
}
