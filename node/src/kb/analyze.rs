//! Text analysis shared by indexing and search: Unicode folding, Chinese word segmentation,
//! English stemming and stop words.
//!
//! The same pipeline runs over articles and queries so that both sides meet on the same terms:
//! 1. NFKC folding and Unicode lowercasing ("ＡＴＭ" → "atm", "①" → "1"), keeping a map back to
//!    the original text so snippets are cut from what the author wrote.
//! 2. The folded text splits into runs: Han characters, letters/digits (any script), and
//!    separators (spaces, punctuation, symbols), which are dropped.
//! 3. A Han run is segmented into words by jieba (search mode for articles, which also yields
//!    the shorter words inside a long one: 信用卡 → 信用, 信用卡). Because segmentation of a
//!    query and of an article do not always agree, articles also index every character
//!    bigram and unigram of the run (what Lucene's CJKAnalyzer does), and queries look up the
//!    bigrams inside each of their words, and a one-character word as a unigram.
//! 4. A letter run is a word: English irregular forms are mapped to their base
//!    ("lost" → "lose"), then the Snowball English stemmer applies ("losing" → "lose",
//!    "cards" → "card"). Runs with digits ("95588", "a320") are kept as they are.
//! 5. A small stop-word list in each language is dropped.

use jieba_rs::Jieba;
use rust_stemmers::{Algorithm, Stemmer};
use std::sync::LazyLock;
use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

/// The segmenter with its embedded dictionary, loaded once per process (about 0.1 s in
/// release builds) on first use.
static JIEBA: LazyLock<Jieba> = LazyLock::new(Jieba::new);

/// The Snowball English stemmer.
static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Words longer than this (in characters) are not indexed: hashes, tokens, base64 blobs.
const MAX_WORD_CHARS: usize = 64;

/// English stop words: too frequent to tell articles apart. "not" and "no" stay, they change
/// the meaning of a question.
const EN_STOP: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "does", "for",
    "from", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of",
    "on", "or", "our", "please", "s", "so", "that", "the", "their", "them", "then", "there",
    "these", "this", "to", "us", "was", "we", "were", "what", "when", "where", "which", "who",
    "why", "will", "with", "would", "you", "your",
];

/// Chinese stop words (whole jieba words): particles, pronouns and question words that a
/// caller's question is full of ("卡丢了怎么办") but that say nothing about the topic.
#[rustfmt::skip]
const ZH_STOP: &[&str] = &[
    "的", "了", "是", "在", "和", "与", "及", "或", "吗", "呢", "吧", "啊", "呀", "哦", "嗯",
    "我", "我们", "你", "您", "你们", "他", "她", "它", "这", "那", "这个", "那个", "就", "也",
    "都", "要", "想", "请", "请问", "怎么", "怎么办", "怎样", "如何", "什么", "为什么", "哪里",
    "哪些", "一下", "可以", "能", "会", "有", "把", "被", "个", "得", "地", "着", "过",
];

/// Han characters never indexed as unigrams nor inside bigrams: grammatical particles and
/// pronouns, present in nearly every article.
#[rustfmt::skip]
const ZH_STOP_CHARS: &[char] = &[
    '的', '了', '是', '吗', '呢', '吧', '啊', '呀', '哦', '嗯', '和', '与', '及', '或', '我',
    '你', '您', '他', '她', '它',
];

/// English irregular forms common in banking questions, mapped to the base form before
/// stemming, so "lost card" meets "lose your card" and "stolen" meets "steal".
const EN_IRREGULAR: &[(&str, &str)] = &[
    ("lost", "lose"),
    ("stolen", "steal"),
    ("stole", "steal"),
    ("withdrew", "withdraw"),
    ("withdrawn", "withdraw"),
    ("paid", "pay"),
    ("sent", "send"),
    ("forgot", "forget"),
    ("forgotten", "forget"),
    ("froze", "freeze"),
    ("frozen", "freeze"),
    ("spent", "spend"),
    ("bought", "buy"),
    ("got", "get"),
    ("gotten", "get"),
    ("took", "take"),
    ("taken", "take"),
    ("held", "hold"),
    ("broke", "break"),
    ("broken", "break"),
    ("chose", "choose"),
    ("chosen", "choose"),
];

/// What a term stands for; the kind is the first character of the term's key so the three
/// kinds never collide in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A word: a jieba word or a (stemmed) letter/digit run.
    Word,
    /// Two consecutive Han characters.
    Bigram,
    /// One Han character.
    Unigram,
}

impl Kind {
    /// The tag that starts the key of a term of this kind.
    fn tag(self) -> char {
        match self {
            Kind::Word => 'w',
            Kind::Bigram => 'b',
            Kind::Unigram => 'u',
        }
    }
}

/// Whether text is analysed for the index or as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Article text: search-mode segmentation, every bigram and unigram of Han runs.
    Index,
    /// Query text: plain segmentation; bigrams only inside each word, unigrams only for
    /// one-character words.
    Query,
}

/// One term found in a text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    /// The index key: kind tag followed by the folded, stemmed text.
    pub(crate) key: String,
    /// What the term stands for (weights differ by kind).
    pub(crate) kind: Kind,
    /// Byte range in the original text (on character boundaries), for snippets.
    pub(crate) start: usize,
    /// End of the byte range in the original text (exclusive).
    pub(crate) end: usize,
    /// In queries: which word of the query this term comes from, so a word counts once when
    /// judging how much of a query an article covers. Unused (0) when indexing.
    pub(crate) group: usize,
}

/// Folded text plus the way back to the original.
struct Folded<'a> {
    /// The original text.
    orig: &'a str,
    /// NFKC-folded, lowercased text.
    text: String,
    /// For each folded chunk (a character and its combining marks): where it starts in
    /// `text` and where it came from in `orig`, both in bytes, increasing.
    chunks: Vec<(usize, usize)>,
}

impl<'a> Folded<'a> {
    /// Folds `orig` chunk by chunk; a chunk is one character and the combining marks after
    /// it, so compositions such as "e" + U+0301 → "é" still happen.
    fn new(orig: &'a str) -> Folded<'a> {
        let mut text = String::with_capacity(orig.len());
        let mut chunks = Vec::new();
        let mut chars = orig.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            let mut end = start + c.len_utf8();
            while let Some(&(i, m)) = chars.peek() {
                if !is_combining_mark(m) {
                    break;
                }
                end = i + m.len_utf8();
                chars.next();
            }
            chunks.push((text.len(), start));
            for n in orig[start..end].nfkc() {
                text.extend(n.to_lowercase());
            }
        }
        Folded { orig, text, chunks }
    }

    /// The byte range in the original text of the folded range `start..end`, widened to
    /// whole chunks so it always lies on character boundaries.
    fn orig_range(&self, start: usize, end: usize) -> (usize, usize) {
        let first = self
            .chunks
            .partition_point(|&(n, _)| n <= start)
            .saturating_sub(1);
        let last = self
            .chunks
            .partition_point(|&(n, _)| n < end)
            .saturating_sub(1);
        let from = self.chunks.get(first).map_or(0, |c| c.1);
        let to = self.chunks.get(last + 1).map_or(self.orig.len(), |c| c.1);
        (from, to.max(from))
    }
}

/// The class of a folded character, deciding how runs split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A CJK ideograph: segmented by jieba.
    Han,
    /// A letter or digit of any other script, or a combining mark continuing one.
    Word,
    /// Anything else separates terms and is dropped.
    Other,
}

/// CJK Unified Ideographs and their extensions, compatibility ideographs and 〇.
fn is_han(c: char) -> bool {
    matches!(c,
        '\u{3007}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2A6DF}'
        | '\u{2A700}'..='\u{2EBEF}'
        | '\u{2F800}'..='\u{2FA1F}'
        | '\u{30000}'..='\u{323AF}')
}

/// Classifies a folded character.
fn class(c: char) -> Class {
    if is_han(c) {
        Class::Han
    } else if c.is_alphanumeric() || is_combining_mark(c) {
        Class::Word
    } else {
        Class::Other
    }
}

/// Whether a folded letter/digit word is an English stop word.
pub(crate) fn is_en_stop(word: &str) -> bool {
    EN_STOP.contains(&word)
}

/// Whether a jieba word is a Chinese stop word.
pub(crate) fn is_zh_stop(word: &str) -> bool {
    ZH_STOP.contains(&word)
}

/// Whether a Han character is left out of unigrams and bigrams.
fn is_zh_stop_char(c: char) -> bool {
    ZH_STOP_CHARS.contains(&c)
}

/// The index form of a folded letter/digit run: irregular forms to base, then stemmed;
/// runs containing digits or non-letters are kept whole.
fn word_term(word: &str) -> String {
    if !word.chars().all(char::is_alphabetic) {
        return word.to_owned();
    }
    let base = EN_IRREGULAR
        .iter()
        .find(|(form, _)| *form == word)
        .map_or(word, |(_, base)| base);
    STEMMER.stem(base).into_owned()
}

/// Builds the key of a term.
fn key(kind: Kind, text: &str) -> String {
    let mut k = String::with_capacity(text.len() + 1);
    k.push(kind.tag());
    k.push_str(text);
    k
}

/// Analyses `orig` and calls `emit` with each term, in text order.
pub(crate) fn analyze(orig: &str, mode: Mode, mut emit: impl FnMut(Token)) {
    let folded = Folded::new(orig);
    let text = folded.text.as_str();
    let mut group = 0usize;
    let mut run_start = 0usize;
    let mut run_class = Class::Other;
    // A sentinel separator at the end flushes the last run.
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        let cl = class(c);
        if cl == run_class && cl != Class::Other {
            continue;
        }
        if run_class != Class::Other && run_start < i {
            let run = &text[run_start..i];
            let mut push = |kind: Kind, s: usize, e: usize, g: usize| {
                let (start, end) = folded.orig_range(run_start + s, run_start + e);
                let term = &run[s..e];
                let term = if kind == Kind::Word && run_class == Class::Word {
                    word_term(term)
                } else {
                    term.to_owned()
                };
                emit(Token {
                    key: key(kind, &term),
                    kind,
                    start,
                    end,
                    group: g,
                });
            };
            match run_class {
                Class::Word => {
                    let n = run.chars().count();
                    if n <= MAX_WORD_CHARS && !is_en_stop(run) {
                        push(Kind::Word, 0, run.len(), group);
                        group += 1;
                    }
                }
                Class::Han => han_run(run, mode, &mut group, &mut push),
                Class::Other => {}
            }
        }
        run_start = i;
        run_class = cl;
    }
}

/// Segments one run of Han characters, calling `push(kind, start, end, group)` with byte
/// ranges inside the run.
fn han_run(
    run: &str,
    mode: Mode,
    group: &mut usize,
    push: &mut impl FnMut(Kind, usize, usize, usize),
) {
    match mode {
        Mode::Index => {
            for t in JIEBA.cut_for_search(run, true) {
                if !is_zh_stop(t.word) && t.byte_start < t.byte_end && t.byte_end <= run.len() {
                    push(Kind::Word, t.byte_start, t.byte_end, 0);
                }
            }
            let chars: Vec<(usize, char)> = run.char_indices().collect();
            for (k, &(s, c)) in chars.iter().enumerate() {
                if is_zh_stop_char(c) {
                    continue;
                }
                let e = s + c.len_utf8();
                push(Kind::Unigram, s, e, 0);
                if let Some(&(s2, c2)) = chars.get(k + 1)
                    && !is_zh_stop_char(c2)
                {
                    push(Kind::Bigram, s, s2 + c2.len_utf8(), 0);
                }
            }
        }
        Mode::Query => {
            for t in JIEBA.cut(run, true) {
                if is_zh_stop(t.word) || t.byte_start >= t.byte_end || t.byte_end > run.len() {
                    continue;
                }
                let g = *group;
                *group += 1;
                push(Kind::Word, t.byte_start, t.byte_end, g);
                let chars: Vec<(usize, char)> = t
                    .word
                    .char_indices()
                    .map(|(i, c)| (t.byte_start + i, c))
                    .collect();
                if let [(s, c)] = chars[..] {
                    push(Kind::Unigram, s, s + c.len_utf8(), g);
                }
                for pair in chars.windows(2) {
                    let ((s, c1), (s2, c2)) = (pair[0], pair[1]);
                    if !is_zh_stop_char(c1) && !is_zh_stop_char(c2) {
                        push(Kind::Bigram, s, s2 + c2.len_utf8(), g);
                    }
                }
            }
        }
    }
}

/// The longest prefix of `s` with at most `max_chars` characters.
pub(crate) fn truncate_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
