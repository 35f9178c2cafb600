// A tiny event emitter, and the clock every timestamp the client reports is taken from.

/** Milliseconds on the page's monotonic clock (performance.now()). */
export const now = () => (globalThis.performance?.now ? performance.now() : Date.now());

export class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  /** Subscribe; returns a function that unsubscribes. `'*'` receives every event. */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  once(type, handler) {
    const off = this.on(type, (event) => {
      off();
      handler(event);
    });
    return off;
  }

  off(type, handler) {
    this._handlers.get(type)?.delete(handler);
  }

  emit(type, event = {}) {
    const payload = { ...event, type, time: now() };
    for (const key of [type, '*']) {
      for (const handler of [...(this._handlers.get(key) ?? [])]) {
        try {
          handler(payload);
        } catch (err) {
          // A listener's bug must not break delivery to the controller.
          setTimeout(() => { throw err; });
        }
      }
    }
  }
}
