//! Knowledge-base search: an in-memory full-text index over articles and quick replies that
//! agents search from the console, in Chinese (zh-CN), English, or both mixed.
//!
//! [`KbIndex::build`] analyses every article once (see `analyze`: NFKC folding, jieba word
//! segmentation plus character bigrams for Chinese, Snowball stemming for English, stop words
//! in both languages) into an inverted index; [`KbIndex::search`] ranks articles with BM25F —
//! BM25 over three fields, the title weighing most, then tags, then the body — scaled by how
//! many of the query's words an article covers, and cuts a snippet from the body around the
//! densest match.
//!
//! The index is immutable: rebuild it when articles change (building a few thousand articles
//! takes well under a second in release builds). The segmenter's dictionary is embedded in
//! the binary and loaded on first use.
//!
//! # Layout
//! - `analyze`: text → terms, shared by indexing, queries and snippets.
//! - `snippet`: picks and cuts the snippet of a hit.

mod analyze;
mod snippet;
#[cfg(test)]
mod tests;

use analyze::{Kind, Mode, analyze, truncate_chars};
use std::collections::HashMap;

/// Fields of an article, in the order of the per-field arrays below.
const TITLE: usize = 0;
/// The tags field.
const TAGS: usize = 1;
/// The body field.
const BODY: usize = 2;
/// Number of fields.
const FIELDS: usize = 3;

/// How much a match in each field counts: a term in the title says far more about what an
/// article is about than one in passing in the body.
const BOOST: [f32; FIELDS] = [4.0, 2.5, 1.0];

/// BM25 length normalisation per field (0: none, 1: full). Titles and tags are short and
/// even, so their length matters less.
const B: [f32; FIELDS] = [0.5, 0.3, 0.75];

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;

/// Weight of a match by kind of term: a whole word beats character n-grams, which are there
/// for recall when segmentation differs between article and query.
fn kind_weight(kind: Kind) -> f32 {
    match kind {
        Kind::Word => 1.0,
        Kind::Bigram => 0.5,
        Kind::Unigram => 0.5,
    }
}

/// Share of the score that does not depend on how many query words an article covers; the
/// rest scales with the covered share, so articles matching every word come first.
const COVERAGE_FLOOR: f32 = 0.3;

/// Characters of each field that are indexed; the rest of a very long article is ignored.
const MAX_FIELD_CHARS: usize = 100_000;

/// Characters of a query that are read; the rest is ignored.
pub const MAX_QUERY_CHARS: usize = 256;

/// Words of a query that are used (after stop words); the rest are ignored.
const MAX_QUERY_WORDS: usize = 64;

/// Most hits one search returns, whatever `limit` asks.
pub const MAX_LIMIT: usize = 200;

/// One article or quick reply to index. Borrowed: the index copies what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct KbDoc<'a> {
    /// The article's id, returned in hits. Ids are unique: of several documents with the same
    /// id, the last one given is indexed.
    pub id: &'a str,
    /// The title, the most heavily weighted field.
    pub title: &'a str,
    /// The text; snippets are cut from it.
    pub body: &'a str,
    /// Keywords chosen by the author (e.g. "挂失", "credit card"), weighted between title
    /// and body.
    pub tags: &'a [String],
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct KbHit {
    /// The article's id, as given to [`KbIndex::build`].
    pub id: String,
    /// Relevance, higher is better; only comparable between hits of one search.
    pub score: f32,
    /// Plain text from the body around the best match, at most about 120 characters, with
    /// "…" where it was cut; the body's beginning when only the title or tags matched.
    pub snippet: String,
}

/// An indexed article.
#[derive(Debug, Clone)]
struct Doc {
    /// Its id, returned in hits.
    id: String,
    /// The indexed part of its body, to cut snippets from.
    body: String,
    /// Length of each field in words, for BM25 length normalisation.
    len: [u32; FIELDS],
}

/// One article containing a term.
#[derive(Debug, Clone, Copy)]
struct Posting {
    /// Index of the article in `KbIndex::docs`.
    doc: u32,
    /// How many times the term occurs in each field (saturating).
    tf: [u16; FIELDS],
}

/// An immutable full-text index over knowledge-base articles.
#[derive(Debug, Clone, Default)]
pub struct KbIndex {
    /// The articles, in the order given (duplicates removed).
    docs: Vec<Doc>,
    /// Term key → index into `postings`.
    terms: HashMap<String, u32>,
    /// For each term, the articles containing it, by increasing article index.
    postings: Vec<Vec<Posting>>,
    /// Average length of each field in words (at least 1), for BM25.
    avg_len: [f32; FIELDS],
}

/// A term of the query that occurs in the index.
struct QueryTerm<'q> {
    /// Its key (for snippets).
    key: &'q str,
    /// Index into `KbIndex::postings`.
    id: u32,
    /// Kind weight × IDF.
    weight: f32,
    /// The query words it stands for, as a bit set.
    words: u64,
}

impl KbIndex {
    /// Indexes `docs`. Never fails: any text is accepted, very long fields are indexed up to
    /// 100 000 characters.
    pub fn build<'a>(docs: impl IntoIterator<Item = KbDoc<'a>>) -> KbIndex {
        let mut order: Vec<KbDoc<'a>> = Vec::new();
        let mut seen: HashMap<&'a str, usize> = HashMap::new();
        for doc in docs {
            match seen.get(doc.id) {
                Some(&i) => order[i] = doc,
                None => {
                    seen.insert(doc.id, order.len());
                    order.push(doc);
                }
            }
        }
        let mut index = KbIndex::default();
        let mut total_len = [0u64; FIELDS];
        for doc in order.into_iter().take(u32::MAX as usize) {
            let n = index.docs.len() as u32;
            let mut counts: HashMap<String, [u32; FIELDS]> = HashMap::new();
            let mut len = [0u32; FIELDS];
            let title = truncate_chars(doc.title, MAX_FIELD_CHARS);
            let body = truncate_chars(doc.body, MAX_FIELD_CHARS);
            let mut add = |field: usize, text: &str| {
                analyze(text, Mode::Index, |t| {
                    if t.kind == Kind::Word {
                        len[field] = len[field].saturating_add(1);
                    }
                    counts.entry(t.key).or_default()[field] += 1;
                });
            };
            add(TITLE, title);
            let mut tag_chars = 0;
            for tag in doc.tags {
                if tag_chars >= MAX_FIELD_CHARS {
                    break;
                }
                let tag = truncate_chars(tag, MAX_FIELD_CHARS - tag_chars);
                tag_chars += tag.chars().count();
                add(TAGS, tag);
            }
            add(BODY, body);
            for (key, tf) in counts {
                let next = index.postings.len() as u32;
                let id = *index.terms.entry(key).or_insert(next);
                if id == next {
                    index.postings.push(Vec::new());
                }
                index.postings[id as usize].push(Posting {
                    doc: n,
                    tf: tf.map(|c| c.min(u32::from(u16::MAX)) as u16),
                });
            }
            for f in 0..FIELDS {
                total_len[f] += u64::from(len[f]);
            }
            index.docs.push(Doc {
                id: doc.id.to_owned(),
                body: body.to_owned(),
                len,
            });
        }
        let n = index.docs.len().max(1) as f64;
        index.avg_len = total_len.map(|t| ((t as f64 / n) as f32).max(1.0));
        index
    }

    /// Number of articles indexed.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether no article is indexed.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The best `limit` articles for `query` (at most [`MAX_LIMIT`]), best first. A query
    /// with no searchable word (empty, blank, only punctuation or stop words) finds nothing;
    /// only its first [`MAX_QUERY_CHARS`] characters are read. Never fails.
    pub fn search(&self, query: &str, limit: usize) -> Vec<KbHit> {
        let limit = limit.min(MAX_LIMIT);
        if limit == 0 || self.docs.is_empty() {
            return Vec::new();
        }
        let query = truncate_chars(query, MAX_QUERY_CHARS);
        // Query terms, deduplicated: key → (kind, words it stands for).
        let mut wanted: Vec<(String, Kind, u64)> = Vec::new();
        let mut words = 0usize;
        analyze(query, Mode::Query, |t| {
            if t.group >= MAX_QUERY_WORDS {
                return;
            }
            words = words.max(t.group + 1);
            let bit = 1u64 << t.group;
            match wanted.iter_mut().find(|w| w.0 == t.key) {
                Some(w) => w.2 |= bit,
                None => wanted.push((t.key, t.kind, bit)),
            }
        });
        if words == 0 {
            return Vec::new();
        }
        let n = self.docs.len() as f32;
        let terms: Vec<QueryTerm<'_>> = wanted
            .iter()
            .filter_map(|(key, kind, bits)| {
                let id = *self.terms.get(key)?;
                let df = self.postings[id as usize].len() as f32;
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                Some(QueryTerm {
                    key,
                    id,
                    weight: kind_weight(*kind) * idf,
                    words: *bits,
                })
            })
            .collect();
        // Per article: BM25F score and the query words it covers.
        let mut acc: Vec<(f32, u64)> = vec![(0.0, 0); self.docs.len()];
        for term in &terms {
            for p in &self.postings[term.id as usize] {
                let doc = &self.docs[p.doc as usize];
                let mut tf = 0.0f32;
                for f in 0..FIELDS {
                    if p.tf[f] > 0 {
                        let norm = 1.0 - B[f] + B[f] * doc.len[f] as f32 / self.avg_len[f];
                        tf += BOOST[f] * f32::from(p.tf[f]) / norm;
                    }
                }
                let slot = &mut acc[p.doc as usize];
                slot.0 += term.weight * tf * (K1 + 1.0) / (K1 + tf);
                slot.1 |= term.words;
            }
        }
        let mut ranked: Vec<(f32, usize)> = acc
            .iter()
            .enumerate()
            .filter(|(_, (score, _))| *score > 0.0)
            .map(|(i, &(score, covered))| {
                let coverage = covered.count_ones() as f32 / words as f32;
                (
                    score * (COVERAGE_FLOOR + (1.0 - COVERAGE_FLOOR) * coverage),
                    i,
                )
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.truncate(limit);
        let for_snippet: HashMap<&str, (usize, f32)> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| (t.key, (i, t.weight)))
            .collect();
        ranked
            .into_iter()
            .map(|(score, i)| {
                let doc = &self.docs[i];
                KbHit {
                    id: doc.id.clone(),
                    score,
                    snippet: snippet::snippet(&doc.body, &for_snippet),
                }
            })
            .collect()
    }
}
