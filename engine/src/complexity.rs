//! A bound on how deeply a statement nests, checked on its tokens before it
//! is parsed.
//!
//! The parser builds a chain such as `1+1+…+1` or `SELECT 1 UNION ALL SELECT
//! 1 …` iteratively, but everything after it (planning, optimizing,
//! serializing, dropping the tree) recurses once per level, so a statement of
//! a few thousand terms could overflow a thread's stack and abort the
//! process, and set-operation chains plan in quadratic time. PostgreSQL
//! answers such statements with `54001` (`statement_too_complex`, "stack depth
//! limit exceeded"); so does Sluice, before building any tree.
//!
//! The depth is estimated from the token stream without recursion: every
//! parenthesis, bracket and `CASE` opens a level; within a level, binary
//! operators and set operations (`UNION`, `JOIN`, …) each add one; a comma
//! or a clause keyword (`SELECT`, `WHERE`, `WHEN`, …) ends an expression, so
//! wide statements (long select lists, `IN` lists, `VALUES` rows) are not
//! deep. The estimate is never below the depth of the tree the parser builds.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The deepest statement accepted by default: well within what planning can
/// recurse through on the server's threads, and plans in well under a second.
pub const DEFAULT_MAX_DEPTH: usize = 1000;

/// A statement nesting deeper than the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "statement too complex: it nests {depth} levels deep (operators, set operations, \
     parentheses) and this server plans at most {max}; split it up, or use IN (…) lists \
     and VALUES rows, which are not deep"
)]
pub struct TooComplex {
    /// The depth found (at least `max + 1`; counting stops there).
    pub depth: usize,
    /// The bound.
    pub max: usize,
}

/// One open level: a parenthesis, bracket or `CASE`.
#[derive(Debug, Default, Clone, Copy)]
struct Level {
    /// Operators of the expression being read at this level.
    operators: usize,
    /// Set operations and joins at this level (a chain that no comma ends).
    chain: usize,
}

/// `Err` when `sql` nests deeper than `max`. Text the tokenizer cannot read
/// passes: the parser reports it.
pub fn check_depth(sql: &str, max: usize) -> Result<(), TooComplex> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let mut nesting = Nesting::default();
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket => nesting.open(),
            Token::RParen => nesting.close(),
            // `a[1][2]…` nests without a level of its own.
            Token::RBracket => {
                nesting.close();
                nesting.top().operators += 1;
            }
            Token::Comma => nesting.top().operators = 0,
            Token::SemiColon => *nesting.top() = Level::default(),
            Token::Word(word) => match word.keyword {
                Keyword::CASE => nesting.open(),
                Keyword::END => nesting.close(),
                Keyword::SELECT
                | Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::ON
                | Keyword::USING
                | Keyword::VALUES
                | Keyword::SET
                | Keyword::RETURNING => nesting.top().operators = 0,
                Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
                | Keyword::MINUS
                | Keyword::JOIN => nesting.top().chain += 1,
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::COLLATE
                | Keyword::AT => nesting.top().operators += 1,
                _ => {}
            },
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_)
            | Token::Period
            | Token::Colon
            | Token::LBrace
            | Token::RBrace
            | Token::EOF => {}
            // Every other token is an operator: arithmetic, comparison,
            // string and bit operators, casts (`::`), JSON arrows, ….
            _ => nesting.top().operators += 1,
        }
        let depth = nesting.depth();
        if depth > max {
            return Err(TooComplex { depth, max });
        }
    }
    Ok(())
}

/// The open levels while reading a statement's tokens.
struct Nesting {
    /// The innermost last; the outermost never closes.
    levels: Vec<Level>,
    /// The depth of the levels below the innermost one, as a running sum.
    below: usize,
}

impl Default for Nesting {
    fn default() -> Self {
        Self {
            levels: vec![Level::default()],
            below: 0,
        }
    }
}

impl Level {
    /// The depth this level adds.
    fn depth(&self) -> usize {
        self.operators + self.chain + 1
    }
}

impl Nesting {
    fn top(&mut self) -> &mut Level {
        self.levels.last_mut().expect("the outermost level stays")
    }

    fn open(&mut self) {
        self.below += self.top().depth();
        self.levels.push(Level::default());
    }

    fn close(&mut self) {
        if self.levels.len() > 1 {
            self.levels.pop();
            self.below -= self.top().depth();
        }
    }

    fn depth(&mut self) -> usize {
        self.below + self.top().depth()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(sql: &str, max: usize) -> bool {
        check_depth(sql, max).is_ok()
    }

    #[test]
    fn chains_and_nesting_count_wide_statements_do_not() {
        let sum = format!("SELECT {}", vec!["1"; 2000].join("+"));
        assert!(!depth_ok(&sum, 1000));
        assert!(depth_ok(&sum, 2100));
        let union = vec!["SELECT 1"; 1500].join(" UNION ALL ");
        assert!(!depth_ok(&union, 1000));
        let ors = (0..1200)
            .map(|i| format!("x = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ");
        assert!(!depth_ok(&format!("SELECT * FROM t WHERE {ors}"), 1000));
        let nested = format!("SELECT {}1{}", "abs(".repeat(1200), ")".repeat(1200));
        assert!(!depth_ok(&nested, 1000));
        let cases = format!(
            "SELECT {} 1 {}",
            "CASE WHEN true THEN ".repeat(1200),
            " END".repeat(1200)
        );
        assert!(!depth_ok(&cases, 1000));
        let indexes = format!("SELECT a{}", "[1]".repeat(1200));
        assert!(!depth_ok(&indexes, 1000));

        let wide = format!(
            "SELECT {} FROM t WHERE x IN ({}) ",
            (0..5000)
                .map(|i| format!("a + {i} AS c{i}"))
                .collect::<Vec<_>>()
                .join(", "),
            (0..5000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(depth_ok(&wide, 100));
        let values = format!(
            "INSERT INTO t VALUES {}",
            vec!["(1, 'a' || 'b')"; 10000].join(", ")
        );
        assert!(depth_ok(&values, 100));
        let statements = vec!["SELECT 1 UNION SELECT 2"; 1000].join(";");
        assert!(depth_ok(&statements, 100));
        assert!(depth_ok("SELEC broken ((( '", 100));
    }
}
