// The incoming-call ring, synthesized with WebAudio (no audio file to ship): two soft
// 440 Hz + 480 Hz bursts, then a pause, repeated until stopped.

let ctx = null;
let timer = null;
let master = null;

/** Creates (or resumes) the audio context; call from a user gesture so playback is allowed. */
export function unlock() {
  try {
    if (!ctx) ctx = new (window.AudioContext || window.webkitAudioContext)();
    if (ctx.state === 'suspended') ctx.resume().catch(() => {});
  } catch (_) {
    ctx = null; // No WebAudio: the banner still shows.
  }
}

function burst(at, length) {
  for (const freq of [440, 480]) {
    const osc = ctx.createOscillator();
    osc.type = 'sine';
    osc.frequency.value = freq;
    const g = ctx.createGain();
    // Short ramps avoid clicks.
    g.gain.setValueAtTime(0, at);
    g.gain.linearRampToValueAtTime(0.12, at + 0.02);
    g.gain.setValueAtTime(0.12, at + length - 0.03);
    g.gain.linearRampToValueAtTime(0, at + length);
    osc.connect(g).connect(master);
    osc.start(at);
    osc.stop(at + length + 0.01);
  }
}

function cycle() {
  if (!ctx || !master) return;
  const t0 = ctx.currentTime + 0.02;
  burst(t0, 0.4);
  burst(t0 + 0.6, 0.4);
}

/** Starts ringing (does nothing if already ringing). */
export function start() {
  if (timer) return;
  unlock();
  if (!ctx) return;
  master = ctx.createGain();
  master.gain.value = 1;
  master.connect(ctx.destination);
  cycle();
  timer = setInterval(cycle, 3000);
}

/** Stops ringing at once. */
export function stop() {
  if (timer) clearInterval(timer);
  timer = null;
  if (master) {
    try {
      master.gain.cancelScheduledValues(0);
      master.gain.value = 0;
      master.disconnect();
    } catch (_) {
      // Already disconnected.
    }
  }
  master = null;
}

/** Whether the ring is sounding. */
export function ringing() {
  return timer !== null;
}
