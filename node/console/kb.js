// Knowledge base panel: search (Chinese or English) over articles and quick replies, open an
// article, copy a quick reply to the clipboard.

import { t, lang, dateTime } from './i18n.js';
import * as api from './api.js';
import { h, replace, copyText, debounce } from './dom.js';

/** The knowledge-base panel (a card in the agent desk). */
export class KnowledgePanel {
  constructor(ctx) {
    /** Shared context (toast, errorText). */
    this.ctx = ctx;
    /** The panel's element, created once and kept across language switches. */
    this.el = h('section', { class: 'card kb', id: 'kb-panel' });
    /** What is typed in the search box. */
    this.query = '';
    /** "all", "article" or "quick_reply". */
    this.kind = 'all';
    /** Hits of the last search, or null before any. */
    this.results = null;
    /** Quick replies shown when the box is empty: full articles. */
    this.quickReplies = null;
    /** Articles fetched whole, by id. */
    this.bodies = new Map();
    /** Which result is opened. */
    this.openId = null;
    this.error = null;
    this.seq = 0;
    this.search = debounce(() => this.runSearch(), 250);
    this.loadQuickReplies();
  }

  async loadQuickReplies() {
    try {
      const all = (await api.kbArticles()) || [];
      const list = Array.isArray(all) ? all : all.articles || [];
      for (const a of list) this.bodies.set(a.id, a);
      this.quickReplies = list.filter((a) => a.kind === 'quick_reply');
    } catch (e) {
      this.quickReplies = [];
      this.error = t('kb.error', { message: this.ctx.errorText(e) });
    }
    this.renderResults();
  }

  async runSearch() {
    const q = this.query.trim();
    const seq = ++this.seq;
    if (!q) {
      this.results = null;
      this.error = null;
      return this.renderResults();
    }
    try {
      const hits = await api.kbSearch(q, this.kind === 'all' ? null : this.kind, 10);
      if (seq !== this.seq) return;
      this.results = Array.isArray(hits) ? hits : hits.hits || [];
      this.error = null;
    } catch (e) {
      if (seq !== this.seq) return;
      this.results = [];
      this.error = t('kb.error', { message: this.ctx.errorText(e) });
    }
    this.renderResults();
  }

  async article(id) {
    if (this.bodies.has(id)) return this.bodies.get(id);
    const a = await api.kbArticle(id);
    this.bodies.set(id, a);
    return a;
  }

  async toggle(id) {
    if (this.openId === id) {
      this.openId = null;
      return this.renderResults();
    }
    try {
      await this.article(id);
      this.openId = id;
    } catch (e) {
      this.ctx.toast(t('kb.error', { message: this.ctx.errorText(e) }), 'error');
    }
    this.renderResults();
  }

  async copy(id) {
    try {
      const a = await this.article(id);
      const ok = await copyText(a.body || '');
      this.ctx.toast(ok ? t('kb.copied') : t('kb.copy_failed'), ok ? 'ok' : 'error');
    } catch (e) {
      this.ctx.toast(t('kb.error', { message: this.ctx.errorText(e) }), 'error');
    }
  }

  /** Builds the panel (start and language change). */
  render() {
    replace(
      this.el,
      h('h2', {}, t('kb.title')),
      h(
        'form',
        { class: 'kb-search', role: 'search', onsubmit: (e) => { e.preventDefault(); this.runSearch(); } },
        h('input', {
          id: 'kb-search',
          type: 'search',
          placeholder: t('kb.search'),
          'aria-label': t('kb.search'),
          value: this.query,
          oninput: (e) => { this.query = e.target.value; this.search(); },
        }),
      ),
      h(
        'div',
        { class: 'segmented', role: 'tablist' },
        [['all', 'kb.all'], ['quick_reply', 'kb.quick_replies'], ['article', 'kb.articles']].map(([kind, key]) =>
          h('button', {
            type: 'button',
            id: `kb-kind-${kind}`,
            role: 'tab',
            'aria-selected': this.kind === kind ? 'true' : 'false',
            class: this.kind === kind ? 'seg on' : 'seg',
            onclick: () => { this.kind = kind; this.render(); this.runSearch(); },
          }, t(key)),
        ),
      ),
      h('div', { id: 'kb-results', class: 'kb-results', 'aria-live': 'polite' }),
    );
    this.renderResults();
  }

  renderResults() {
    const box = this.el.querySelector('#kb-results');
    if (!box) return;
    const q = this.query.trim();
    let items;
    if (!q) {
      if (this.kind === 'article') return replace(box, h('p', { class: 'muted' }, t('kb.hint')));
      // Quick replies in the console's language first.
      const mine = lang() === 'zh' ? /^zh/i : /^en/i;
      items = (this.quickReplies || [])
        .slice()
        .sort((a, b) => Number(!mine.test(a.lang || '')) - Number(!mine.test(b.lang || '')))
        .map((a) => ({ id: a.id, kind: a.kind, title: a.title, snippet: (a.body || '').slice(0, 140) }));
      if (this.quickReplies === null) return replace(box, h('p', { class: 'muted' }, t('app.loading')));
    } else {
      if (this.results === null) return replace(box, h('p', { class: 'muted' }, t('app.loading')));
      items = this.results;
    }
    replace(
      box,
      this.error ? h('p', { class: 'error-text' }, this.error) : null,
      items.length === 0 && !this.error ? h('p', { class: 'muted' }, q ? t('kb.no_results') : t('kb.hint')) : null,
      h(
        'ul',
        { class: 'kb-list' },
        items.map((it) => {
          const open = this.openId === it.id;
          const full = open ? this.bodies.get(it.id) : null;
          return h(
            'li',
            { class: 'kb-item', dataset: { id: it.id, kind: it.kind || '' } },
            h(
              'div',
              { class: 'kb-item-head' },
              h('button', { type: 'button', class: 'link kb-title', 'aria-expanded': open ? 'true' : 'false', onclick: () => this.toggle(it.id) }, it.title || it.id),
              it.kind === 'quick_reply' ? h('button', { type: 'button', class: 'btn btn-small kb-copy', onclick: () => this.copy(it.id) }, t('kb.copy')) : null,
            ),
            full
              ? h(
                  'div',
                  { class: 'kb-body' },
                  h('p', { class: 'prewrap' }, full.body || ''),
                  full.updated_at_ms ? h('p', { class: 'muted small' }, t('kb.updated', { when: dateTime(full.updated_at_ms), who: full.updated_by || '' })) : null,
                )
              : h('p', { class: 'kb-snippet muted small' }, it.snippet || ''),
          );
        }),
      ),
    );
  }
}
