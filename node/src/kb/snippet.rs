//! The snippet shown under a search hit: the stretch of the article's body where the query's
//! terms are densest, cut on character boundaries.

use super::analyze::{Mode, analyze, truncate_chars};
use std::collections::HashMap;

/// Most characters of body text in a snippet (an ellipsis may be added at each end, so a
/// snippet is at most `SNIPPET_CHARS + 2` characters).
pub(crate) const SNIPPET_CHARS: usize = 118;

/// Width, in characters, of the window in which matches are gathered to pick the best spot.
const WINDOW_CHARS: usize = 100;

/// Characters of context kept before the first match, when there is room.
const LEAD_CHARS: usize = 24;

/// Only this many leading characters of a body are scanned for matches, bounding the work a
/// search does per hit.
const SCAN_CHARS: usize = 20_000;

/// One query term found in the body.
struct Match {
    /// First character (index in characters).
    start: usize,
    /// One past the last character.
    end: usize,
    /// Which query term (index into the term list), to count each term once per window.
    term: usize,
}

/// Builds the snippet of `body` for a query whose terms and weights are `terms`
/// (term key → (index, weight)).
pub(crate) fn snippet(body: &str, terms: &HashMap<&str, (usize, f32)>) -> String {
    let scanned = truncate_chars(body, SCAN_CHARS);
    // Byte offset of each character, plus the end, to move between bytes and characters.
    let offsets: Vec<usize> = body
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(body.len()))
        .collect();
    let to_char = |byte: usize| offsets.partition_point(|&o| o < byte);
    let mut matches = Vec::new();
    analyze(scanned, Mode::Index, |t| {
        if let Some(&(term, _)) = terms.get(t.key.as_str()) {
            matches.push(Match {
                start: to_char(t.start),
                end: to_char(t.end),
                term,
            });
        }
    });
    matches.sort_by_key(|m| (m.start, m.end));
    let weight_of: Vec<f32> = {
        let mut w = vec![0.0; terms.len()];
        for &(i, weight) in terms.values() {
            if let Some(slot) = w.get_mut(i) {
                *slot = weight;
            }
        }
        w
    };
    let (from, to) = best_window(&matches, &weight_of);
    cut(body, &offsets, from, to)
}

/// The character range of the window holding the heaviest set of distinct query terms
/// (the earliest on ties); `(0, 0)` when nothing matched.
fn best_window(matches: &[Match], weight_of: &[f32]) -> (usize, usize) {
    let mut counts = vec![0u32; weight_of.len()];
    let mut sum = 0.0f32;
    let mut best = (0.0f32, 0usize, 0usize);
    let mut j = 0;
    for i in 0..matches.len() {
        j = j.max(i);
        while j < matches.len() && matches[j].end.saturating_sub(matches[i].start) <= WINDOW_CHARS {
            let t = matches[j].term;
            if counts[t] == 0 {
                sum += weight_of[t];
            }
            counts[t] += 1;
            j += 1;
        }
        if j > i {
            if sum > best.0 {
                let end = matches[i..j]
                    .iter()
                    .map(|m| m.end)
                    .max()
                    .unwrap_or(matches[i].end);
                best = (sum, matches[i].start, end);
            }
            let t = matches[i].term;
            counts[t] -= 1;
            if counts[t] == 0 {
                sum -= weight_of[t];
            }
        }
    }
    (best.1, best.2)
}

/// Cuts about `SNIPPET_CHARS` characters of `body` around the character range `from..to`,
/// folding runs of whitespace and control characters into one space and marking cuts
/// with "…".
fn cut(body: &str, offsets: &[usize], from: usize, to: usize) -> String {
    let total = offsets.len().saturating_sub(1);
    let span = to.saturating_sub(from);
    let lead = LEAD_CHARS.min(SNIPPET_CHARS.saturating_sub(span));
    let mut start = from.saturating_sub(lead).min(total);
    let end = (start + SNIPPET_CHARS).min(total);
    if end - start < SNIPPET_CHARS {
        start = end.saturating_sub(SNIPPET_CHARS);
    }
    let text = &body[offsets[start]..offsets[end]];
    let mut out = String::with_capacity(text.len() + 8);
    if start > 0 {
        out.push('…');
    }
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            space = true;
        } else {
            if space && !out.is_empty() && out != "…" {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    if end < total {
        out.push('…');
    }
    out
}
