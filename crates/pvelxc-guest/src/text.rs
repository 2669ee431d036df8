//! Free text from a peer (the init's shim, the agent's guest: error messages, kernel
//! release, process names) made safe to log. Both protocols clean with this one rule
//! (`pvelxc_init::proto::clean_text` and `pvelxc_agent::proto::clean_text` re-export it).

/// Most bytes of peer-supplied text kept ([`clean_text`]).
pub const MAX_TEXT: usize = 4096;

/// Appended to text cut at [`MAX_TEXT`].
const ELLIPSIS: char = '…';

/// Characters that could forge or hide log lines: Unicode control characters (C0, DEL,
/// C1: newlines, escapes, ...) and the bidirectional overrides/isolates that reorder
/// what a terminal shows.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Peer text for logs and error messages: every control character or bidi override is
/// replaced by a space, and text longer than [`MAX_TEXT`] bytes is cut on a character
/// boundary and ends in `…` (the result is at most [`MAX_TEXT`] bytes). Idempotent.
pub fn clean_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_TEXT));
    let room = MAX_TEXT - ELLIPSIS.len_utf8();
    for (i, c) in s.char_indices() {
        // Cut only when the rest does not fit: text of exactly MAX_TEXT bytes stays whole.
        if out.len() + c.len_utf8() > room && s.len() - i + out.len() > MAX_TEXT {
            out.push(ELLIPSIS);
            return out;
        }
        out.push(if is_unsafe(c) { ' ' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_replaced() {
        assert_eq!(clean_text("a\nb\r\x1b[31mc\u{7f}\u{85}"), "a b  [31mc  ");
        assert_eq!(clean_text("x\u{202E}y\u{2066}z"), "x y z");
        assert_eq!(clean_text("ünïcode ok"), "ünïcode ok");
    }

    #[test]
    fn truncated_on_char_boundary() {
        let exact = "é".repeat(MAX_TEXT / 2);
        assert_eq!(clean_text(&exact), exact);
        let long = "é".repeat(MAX_TEXT);
        let c = clean_text(&long);
        assert!(c.len() <= MAX_TEXT, "{}", c.len());
        assert!(c.ends_with(ELLIPSIS));
        assert!(c.len() > MAX_TEXT - 8);
        assert_eq!(clean_text(&c), c);
    }
}
