use super::analyze::{Mode, analyze};
use super::snippet::SNIPPET_CHARS;
use super::*;

/// A test article with owned fields.
struct Article {
    id: &'static str,
    title: &'static str,
    body: &'static str,
    tags: Vec<String>,
}

fn article(id: &'static str, title: &'static str, body: &'static str, tags: &[&str]) -> Article {
    Article {
        id,
        title,
        body,
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

fn index_of(articles: &[Article]) -> KbIndex {
    KbIndex::build(articles.iter().map(|a| KbDoc {
        id: a.id,
        title: a.title,
        body: a.body,
        tags: &a.tags,
    }))
}

/// A small bank knowledge base, in both languages, with articles that share words
/// ("卡", "转账", "card") so ranking has something to decide.
fn bank_kb() -> Vec<Article> {
    vec![
        article(
            "zh-card-loss",
            "信用卡挂失流程",
            "如果您的信用卡或借记卡丢失、被盗，请立即拨打95588客服热线或在手机银行“卡片管理”中办理挂失。\
             挂失后卡片立即冻结，挂失前发生的交易请核对账单。补办新卡需本人携带有效身份证件到任一网点办理，\
             补卡工本费按现行收费标准收取，新卡约7个工作日寄出。",
            &["挂失", "信用卡", "补卡", "丢卡"],
        ),
        article(
            "zh-card-activate",
            "新信用卡激活与首次设置",
            "收到新卡后，请在手机银行或拨打95588激活信用卡。激活前请核对卡面姓名，并设置交易密码。\
             首次刷卡消费后，卡片额度即可正常使用。信用卡账单日和还款日可在“我的卡片”中查看。",
            &["激活", "信用卡", "新卡"],
        ),
        article(
            "zh-transfer-limit",
            "手机银行转账限额说明",
            "手机银行单笔转账限额为5万元，日累计转账限额为20万元。使用U盾或动态口令可提高限额。\
             如需调整转账限额，请登录手机银行进入“安全中心-限额管理”，或携带身份证到柜台办理。",
            &["转账", "限额", "手机银行"],
        ),
        article(
            "zh-atm",
            "ATM取款失败但已扣款怎么办",
            "在ATM取款时如出现取款失败、但账户已扣款的情况，请保留交易凭条，记下ATM编号和交易时间。\
             一般情况下，款项会在1至3个工作日内自动退回原账户。如超过时间仍未到账，请拨打95588登记处理。",
            &["ATM", "取款", "扣款"],
        ),
        article(
            "zh-password",
            "手机银行登录密码重置",
            "忘记手机银行登录密码时，可在登录页点击“忘记密码”，通过短信验证码和身份证号码验证身份后重置。\
             连续输错密码5次，账户将被锁定24小时。",
            &["密码", "登录"],
        ),
        article(
            "en-card-loss",
            "Lost or stolen card",
            "If your debit or credit card is lost or stolen, call 95588 immediately or freeze the card \
             in the mobile banking app under Card Services. Transactions made before you report the loss \
             may still appear on your statement. A replacement card is mailed within 7 working days.",
            &["card", "report loss"],
        ),
        article(
            "en-transfer-limit",
            "Transfer limits in mobile banking",
            "The single transfer limit in mobile banking is CNY 50,000 and the daily limit is CNY 200,000. \
             Customers with a security token can raise their limits in Security Center > Limits, \
             or at any branch with a valid ID.",
            &["transfer", "limit"],
        ),
        article(
            "en-statement",
            "Reading your monthly statement",
            "Your monthly statement lists every purchase, transfer and fee. Interest is charged when the \
             balance is not repaid in full by the due date.",
            &["statement"],
        ),
        article(
            "mixed-overseas-atm",
            "境外ATM取款 Overseas ATM withdrawals",
            "在境外使用银联ATM取款，每日累计取款上限为等值1万元人民币。Overseas ATM withdrawals are \
             limited to the equivalent of CNY 10,000 per day; a fee of 1% applies to each withdrawal.",
            &["境外", "ATM", "withdrawal"],
        ),
        article(
            "qr-greeting",
            "标准问候语",
            "您好，这里是灵犀银行客服中心，很高兴为您服务，请问有什么可以帮您？",
            &["问候", "开场白"],
        ),
    ]
}

fn ids(hits: &[KbHit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

fn keys(text: &str, mode: Mode) -> Vec<String> {
    let mut out = Vec::new();
    analyze(text, mode, |t| out.push(t.key));
    out
}

#[test]
fn analyzer_folds_width_case_and_stems() {
    assert_eq!(keys("ＡＴＭ取款", Mode::Query), ["watm", "w取款", "b取款"]);
    assert_eq!(keys("Losing CARDS", Mode::Query), ["wlose", "wcard"]);
    assert_eq!(keys("lost card", Mode::Query), ["wlose", "wcard"]);
    assert_eq!(keys("热线95588", Mode::Query), ["w热线", "b热线", "w95588"]);
    // Stop words of both languages are dropped; what remains is the topic.
    assert_eq!(
        keys("How do I reset my password", Mode::Query),
        ["wreset", "wpassword"]
    );
    assert_eq!(
        keys("卡丢了怎么办", Mode::Query),
        ["w卡", "u卡", "w丢", "u丢"]
    );
}

#[test]
fn analyzer_ranges_point_into_the_original_text() {
    let text = "请拨打９５５８８，Ｃａｒｄ挂失";
    analyze(text, Mode::Index, |t| {
        let original = &text[t.start..t.end];
        assert!(!original.is_empty(), "{t:?}");
        if t.key == "w95588" {
            assert_eq!(original, "９５５８８");
        }
        if t.key == "wcard" {
            assert_eq!(original, "Ｃａｒｄ");
        }
    });
}

#[test]
fn chinese_words_find_card_loss() {
    let index = index_of(&bank_kb());
    let hits = index.search("信用卡 挂失", 5);
    assert_eq!(hits[0].id, "zh-card-loss", "{:?}", ids(&hits));
    // Without the space, and as a single term, too.
    assert_eq!(index.search("信用卡挂失", 5)[0].id, "zh-card-loss");
    assert_eq!(index.search("挂失", 5)[0].id, "zh-card-loss");
}

#[test]
fn colloquial_question_ranks_card_loss_first() {
    let index = index_of(&bank_kb());
    let hits = index.search("卡丢了怎么办", 5);
    assert_eq!(hits[0].id, "zh-card-loss", "{:?}", ids(&hits));
    let hits = index.search("我的银行卡丢失了", 5);
    assert_eq!(hits[0].id, "zh-card-loss", "{:?}", ids(&hits));
}

#[test]
fn english_forms_find_card_loss() {
    let index = index_of(&bank_kb());
    for q in ["lost card", "losing cards", "Stolen card", "LOST CARD"] {
        let hits = index.search(q, 5);
        assert_eq!(hits[0].id, "en-card-loss", "{q}: {:?}", ids(&hits));
    }
}

#[test]
fn transfer_limit_in_both_languages() {
    let index = index_of(&bank_kb());
    let hits = index.search("转账限额", 5);
    assert_eq!(hits[0].id, "zh-transfer-limit", "{:?}", ids(&hits));
    let hits = index.search("transfer limit", 5);
    assert_eq!(hits[0].id, "en-transfer-limit", "{:?}", ids(&hits));
    let hits = index.search("how do I raise my transfer limits?", 5);
    assert_eq!(hits[0].id, "en-transfer-limit", "{:?}", ids(&hits));
}

#[test]
fn mixed_language_queries() {
    let index = index_of(&bank_kb());
    let hits = index.search("ATM 取款", 5);
    let top: Vec<&str> = ids(&hits).into_iter().take(2).collect();
    assert!(
        top.contains(&"zh-atm") && top.contains(&"mixed-overseas-atm"),
        "{top:?}"
    );
    assert_eq!(index.search("ATM取款失败", 5)[0].id, "zh-atm");
    assert_eq!(
        index.search("境外 ATM withdrawal", 5)[0].id,
        "mixed-overseas-atm"
    );
    // "withdrawals" and "withdrawal" meet on the stem.
    assert_eq!(
        index.search("ATM withdrawal fee", 5)[0].id,
        "mixed-overseas-atm"
    );
}

#[test]
fn full_width_and_digits() {
    let index = index_of(&bank_kb());
    let hits = index.search("ＡＴＭ", 5);
    assert!(!hits.is_empty());
    assert!(
        hits.iter().all(|h| h.id.contains("atm")),
        "{:?}",
        ids(&hits)
    );
    let hits = index.search("95588", 10);
    for id in ["zh-card-loss", "zh-card-activate", "zh-atm", "en-card-loss"] {
        assert!(
            ids(&hits).contains(&id),
            "{id} missing from {:?}",
            ids(&hits)
        );
    }
    // Full-width digits in the query fold to the same term.
    assert_eq!(index.search("９５５８８", 10).len(), hits.len());
}

#[test]
fn title_matches_rank_first() {
    let articles = vec![
        article(
            "body-only",
            "Mobile banking overview",
            "Mobile banking lets you pay bills, check balances and transfer money. The transfer limit \
             depends on your security method; the transfer limit for token users is higher, and the \
             daily transfer limit resets at midnight.",
            &[],
        ),
        article(
            "in-title",
            "Transfer limit",
            "Limits differ by channel and security method; see the table for each channel.",
            &[],
        ),
        article(
            "tagged",
            "Paying bills",
            "Pay utility bills online.",
            &["transfer"],
        ),
    ];
    let index = index_of(&articles);
    let hits = index.search("transfer limit", 10);
    assert_eq!(ids(&hits), ["in-title", "body-only", "tagged"]);
    assert!(hits[0].score > hits[1].score);

    let articles = vec![
        article(
            "zh-body",
            "网银常见问题",
            "网银转账限额可以调整，转账限额按安全工具不同而不同，转账限额每日零点重置。",
            &[],
        ),
        article("zh-title", "转账限额", "各渠道额度不同，详见下表。", &[]),
    ];
    let hits = index_of(&articles).search("转账限额", 10);
    assert_eq!(ids(&hits), ["zh-title", "zh-body"]);
}

#[test]
fn empty_blank_and_stop_word_queries_find_nothing() {
    let index = index_of(&bank_kb());
    for q in [
        "",
        " ",
        "\n\t  ",
        "　",
        "？！。",
        "的了吗",
        "the of and",
        "怎么办",
    ] {
        assert!(index.search(q, 10).is_empty(), "{q:?}");
    }
    assert!(index.search("信用卡", 0).is_empty());
    assert!(KbIndex::build([]).search("信用卡", 10).is_empty());
    assert!(index.search("unrelatedword", 10).is_empty());
}

#[test]
fn limit_is_respected_and_results_are_sorted() {
    let index = index_of(&bank_kb());
    let hits = index.search("95588 card 卡 limit", 3);
    assert_eq!(hits.len(), 3);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(index.search("95588 card 卡 limit", usize::MAX).len() <= MAX_LIMIT);
}

#[test]
fn duplicate_ids_keep_the_last_document() {
    let tags: Vec<String> = Vec::new();
    let index = KbIndex::build([
        KbDoc {
            id: "a",
            title: "旧标题",
            body: "旧内容",
            tags: &tags,
        },
        KbDoc {
            id: "b",
            title: "其他",
            body: "无关",
            tags: &tags,
        },
        KbDoc {
            id: "a",
            title: "New title",
            body: "fresh content",
            tags: &tags,
        },
    ]);
    assert_eq!(index.len(), 2);
    assert!(index.search("旧内容", 10).is_empty());
    assert_eq!(ids(&index.search("fresh", 10)), ["a"]);
}

#[test]
fn snippet_is_short_and_around_the_match() {
    let filler = "本行提供多种便民服务，欢迎咨询。";
    let body = format!(
        "{}如需挂失信用卡，请拨打95588。{}",
        filler.repeat(12),
        filler.repeat(12)
    );
    let tags: Vec<String> = Vec::new();
    let index = KbIndex::build([KbDoc {
        id: "x",
        title: "服务指南",
        body: &body,
        tags: &tags,
    }]);
    let hit = &index.search("挂失", 1)[0];
    assert!(hit.snippet.contains("如需挂失信用卡"), "{}", hit.snippet);
    assert!(
        hit.snippet.starts_with('…') && hit.snippet.ends_with('…'),
        "{}",
        hit.snippet
    );
    assert!(hit.snippet.chars().count() <= SNIPPET_CHARS + 2);

    let body = format!(
        "{} Report a lost card by calling 95588.\n\n{}",
        "Word ".repeat(60),
        "Tail ".repeat(60)
    );
    let index = KbIndex::build([KbDoc {
        id: "y",
        title: "Services",
        body: &body,
        tags: &tags,
    }]);
    let hit = &index.search("lost card", 1)[0];
    assert!(
        hit.snippet
            .contains("Report a lost card by calling 95588. Tail"),
        "{}",
        hit.snippet
    );
    assert!(!hit.snippet.contains("  ") && !hit.snippet.contains('\n'));
}

#[test]
fn snippet_without_body_match_shows_the_beginning() {
    let index = index_of(&bank_kb());
    let hit = &index.search("标准问候语", 1)[0];
    assert_eq!(hit.id, "qr-greeting");
    assert_eq!(
        hit.snippet,
        "您好，这里是灵犀银行客服中心，很高兴为您服务，请问有什么可以帮您？"
    );
}

#[test]
fn huge_inputs_are_truncated_safely() {
    let big = "信用卡挂失ATM取款".repeat(20_000);
    let tags = vec!["标签".repeat(100_000)];
    let index = KbIndex::build([KbDoc {
        id: "big",
        title: &big,
        body: &big,
        tags: &tags,
    }]);
    let hits = index.search(&"挂失".repeat(1_000_000), 10);
    assert_eq!(ids(&hits), ["big"]);
    assert!(hits[0].snippet.chars().count() <= SNIPPET_CHARS + 2);
    // A multi-byte character straddling the query cut-off does not break it.
    let q = format!("{}信用卡", "a".repeat(MAX_QUERY_CHARS - 1));
    let _ = index.search(&q, 10);
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A string mixing ASCII, Chinese, full-width forms, combining marks, other scripts,
    /// emoji, controls and arbitrary code points.
    fn text(&mut self, max_chars: u64) -> String {
        const PIECES: &[&str] = &[
            "信用卡",
            "挂失",
            "ATM",
            "取款",
            "lost",
            "card",
            "95588",
            " ",
            "，",
        ];
        let n = self.below(max_chars + 1);
        let mut s = String::new();
        for _ in 0..n {
            let c = match self.below(10) {
                0 => {
                    s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
                    continue;
                }
                1 => 0x20 + self.below(0x5F) as u32,
                2 | 3 => 0x4E00 + self.below(0x5200) as u32,
                4 => 0xFF01 + self.below(0x5E) as u32,
                5 => 0x0300 + self.below(0x70) as u32,
                6 => 0x1F300 + self.below(0x300) as u32,
                7 => self.below(0x20) as u32,
                8 => 0xAC00 + self.below(0x2BA4) as u32,
                _ => self.below(0x11_0000) as u32,
            };
            if let Some(c) = char::from_u32(c) {
                s.push(c);
            }
        }
        s
    }
}

#[test]
fn random_unicode_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..40 {
        let docs: Vec<(String, String, String, Vec<String>)> = (0..8)
            .map(|i| {
                let tags = (0..rng.below(3)).map(|_| rng.text(8)).collect();
                (format!("d{i}"), rng.text(20), rng.text(200), tags)
            })
            .collect();
        let index = KbIndex::build(docs.iter().map(|(id, title, body, tags)| KbDoc {
            id,
            title,
            body,
            tags,
        }));
        for _ in 0..10 {
            let query = if rng.below(3) == 0 {
                // A slice of an indexed text, so that queries do match.
                let (_, title, body, _) = &docs[rng.below(8) as usize];
                let text: Vec<char> = format!("{title}{body}").chars().collect();
                let from = rng.below(text.len() as u64 + 1) as usize;
                let to = (from + rng.below(12) as usize).min(text.len());
                text[from..to].iter().collect()
            } else {
                rng.text(30)
            };
            let limit = rng.below(12) as usize;
            let hits = index.search(&query, limit);
            assert!(hits.len() <= limit, "round {round}: {query:?}");
            for h in &hits {
                assert!(
                    h.score.is_finite() && h.score > 0.0,
                    "round {round}: {query:?} {h:?}"
                );
                assert!(h.snippet.chars().count() <= SNIPPET_CHARS + 2, "{h:?}");
            }
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }
}

#[test]
fn index_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + Clone>() {}
    shared::<KbIndex>();
    let index = std::sync::Arc::new(index_of(&bank_kb()));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let index = index.clone();
            std::thread::spawn(move || index.search("信用卡 挂失", 3)[0].id.clone())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("search thread"), "zh-card-loss");
    }
}
