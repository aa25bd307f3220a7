//! Terminal answers are not input.
//!
//! A program can ask the terminal a question (`printf '\033[6n'`: where is the
//! cursor?) and the terminal answers by itself, through the same path as keystrokes:
//! for ssh the user's terminal emulator answers and sshd writes the answer into the pty
//! master; for Mosh, mosh-server's own emulator writes it. Counted as input, a loop of
//! questions would keep an abandoned session alive forever.
//!
//! [`only_answers`] tells, from the first bytes of one write into a pty master, whether
//! the write holds nothing but such answers ("reports"). It runs inside the eBPF
//! programs on every keystroke, so it is `no_std`, allocates nothing, never panics,
//! looks at each byte once in a loop bounded by [`ANSWER_PREFIX`], and keeps its state
//! in a few bytes.
//!
//! What is an answer (CSI = `ESC [` or 0x9b; OSC = `ESC ]` or 0x9d; DCS = `ESC P` or
//! 0x90; APC = `ESC _` or 0x9f; ST = `ESC \`, or 0x9c after an 8-bit introducer):
//! - cursor position `CSI r;c R`, `CSI ? r;c R` (DECXCPR);
//! - device attributes `CSI ? … c`, `CSI > … c`, `CSI = … c`;
//! - status `CSI … n`, `CSI ? … n`;
//! - window reports `CSI … t` (`8;r;c`, `4;h;w`, `6;h;w`, `3;x;y`, `1`, `2`, …);
//! - mode reports `CSI ? … $ y`, `CSI … $ y`;
//! - keyboard protocol flags `CSI ? … u`, modifier key options `CSI > … m`,
//!   graphics attributes `CSI ? … S`;
//! - every OSC, DCS and APC string, ended by BEL or ST (colours, titles,
//!   `DECRQSS`/`XTGETTCAP`/`XTVERSION` replies, kitty graphics replies): no key
//!   produces one.
//!
//! Everything else is input, among them every key: letters, Enter, `ESC x` (Alt),
//! `ESC O A` (SS3 arrows and F1–F4), `CSI A`, `CSI 1;5 A`, `CSI 15 ~`, kitty's
//! `CSI code;mods u`, mouse reports (`CSI M …`, `CSI < … M/m`), bracketed paste
//! (`CSI 200 ~ … CSI 201 ~`), focus in/out (`CSI I`, `CSI O`), and any sequence this
//! module does not know.
//!
//! One key has the bytes of an answer: xterm sends F3 with modifiers as `CSI 1;m R`
//! (Shift-F3 is `CSI 1;2 R`), exactly a cursor position report for row 1, column m.
//! It is taken as an answer: otherwise any program could move the cursor to row 1 and
//! ask where it is. A person pressing nothing but modified F3 is not kept alive by it.
//!
//! A write longer than [`ANSWER_PREFIX`] bytes is judged by its first
//! [`ANSWER_PREFIX`] bytes: a program that asks many questions at once gets one long
//! write of answers back, and that must not count either. Those bytes must hold
//! nothing but answers, the last one possibly cut off at the limit. A key that a
//! person types in the same instant, after a burst of answers, is missed; the next
//! one counts.

/// How many bytes of a write the probes read and judge.
pub const ANSWER_PREFIX: usize = 64;

/// The shortest answer, 8-bit `CSI n`. A shorter write (a typed letter) is input
/// without reading it, which keeps the read off the hottest path.
pub const SHORTEST_ANSWER: u64 = 2;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;
const C1_DCS: u8 = 0x90;
const C1_CSI: u8 = 0x9b;
const C1_ST: u8 = 0x9c;
const C1_OSC: u8 = 0x9d;
const C1_APC: u8 = 0x9f;

/// Where the parser is between two bytes. One small number, so that the whole parser
/// is one table ([`NEXT`]) indexed by state and byte: the eBPF verifier then sees one
/// unknown load per byte, not a tree of branches on remembered bytes, whose
/// combinations it would walk one by one (it gave up at a million instructions).
mod state {
    /// Between answers: the next byte must start one.
    pub const GROUND: u8 = 0;
    /// After a 7-bit `ESC`.
    pub const ESCAPE: u8 = 1;
    /// Right after a control sequence introducer.
    pub const CSI: u8 = 2;
    /// In the parameters of a control sequence without a private marker.
    pub const CSI_PLAIN: u8 = 3;
    /// In the parameters after the private marker `?`, `>` or `=`.
    pub const CSI_QUESTION: u8 = 4;
    pub const CSI_GREATER: u8 = 5;
    pub const CSI_EQUALS: u8 = 6;
    /// After the intermediate `$`, without and with `?`: only `y` (a mode report) may end it.
    pub const CSI_PLAIN_DOLLAR: u8 = 7;
    pub const CSI_QUESTION_DOLLAR: u8 = 8;
    /// In an OSC, DCS or APC string opened by a 7-bit introducer (`ESC ]`): only BEL
    /// or `ESC \` end it; 0x9c is text there (a UTF-8 continuation byte in a title).
    pub const STRING7: u8 = 9;
    /// In a string opened by an 8-bit introducer (0x9d): 0x9c ends it too.
    pub const STRING8: u8 = 10;
    /// After `ESC` inside a string: only `\` (ST) may follow.
    pub const STRING7_ESCAPE: u8 = 11;
    pub const STRING8_ESCAPE: u8 = 12;
    /// Not an answer: a key or anything else.
    pub const INPUT: u8 = 13;
    /// Somewhere in a console's input (see [`super::AnswerStream::unknown`]): what an
    /// answer's remainder can hold keeps it here, an answer's final byte ends it,
    /// `ESC` starts a sequence.
    pub const RESYNC: u8 = 14;
    /// Number of rows in [`super::NEXT`] (a power of two, so a mask bounds the index).
    pub const ROWS: usize = 16;
}

/// The parser: the state after `byte` in state `st`. Written for reading; the probes
/// use it through [`NEXT`], built from it at compile time.
const fn step(st: u8, byte: u8) -> u8 {
    use state::*;
    match st {
        GROUND => match byte {
            ESC => ESCAPE,
            C1_CSI => CSI,
            C1_OSC | C1_DCS | C1_APC => STRING8,
            _ => INPUT,
        },
        ESCAPE => match byte {
            b'[' => CSI,
            b']' | b'P' | b'_' => STRING7,
            // `ESC O x` (SS3 keys), `ESC x` (Alt-x), `ESC ESC`: keys.
            _ => INPUT,
        },
        CSI => match byte {
            b'?' => CSI_QUESTION,
            b'>' => CSI_GREATER,
            b'=' => CSI_EQUALS,
            // `<` is SGR mouse.
            b'<' => INPUT,
            b'$' => CSI_PLAIN_DOLLAR,
            _ => csi_param_or_final(CSI_PLAIN, byte),
        },
        CSI_PLAIN | CSI_QUESTION | CSI_GREATER | CSI_EQUALS => csi_param_or_final(st, byte),
        CSI_PLAIN_DOLLAR | CSI_QUESTION_DOLLAR => match byte {
            b'y' => GROUND,
            _ => INPUT,
        },
        STRING7 | STRING8 => match byte {
            BEL => GROUND,
            ESC if st == STRING7 => STRING7_ESCAPE,
            ESC => STRING8_ESCAPE,
            C1_ST if st == STRING8 => GROUND,
            // Cancelled strings are not answers.
            CAN | SUB => INPUT,
            _ => st,
        },
        STRING7_ESCAPE | STRING8_ESCAPE => match byte {
            b'\\' => GROUND,
            _ => INPUT,
        },
        RESYNC => match byte {
            ESC => ESCAPE,
            b'0'..=b'9' | b';' | b':' | b'?' | b'>' | b'=' | b'$' | b'[' => RESYNC,
            b'R' | b'c' | b'n' | b't' | b'y' | b'u' | b'S' | b'm' => GROUND,
            _ => INPUT,
        },
        _ => INPUT,
    }
}

/// Inside the parameters of a control sequence in state `st` (which remembers its
/// private marker): a parameter byte stays, `$` waits for `y`, a final byte ends it,
/// as an answer or not. Anything else (a marker in second place, other intermediates,
/// control characters) is not an answer.
const fn csi_param_or_final(st: u8, byte: u8) -> u8 {
    use state::*;
    match byte {
        b'0'..=b'9' | b';' | b':' => st,
        b'$' if st == CSI_PLAIN => CSI_PLAIN_DOLLAR,
        b'$' if st == CSI_QUESTION => CSI_QUESTION_DOLLAR,
        0x40..=0x7e => {
            let marker = match st {
                CSI_QUESTION => b'?',
                CSI_GREATER => b'>',
                CSI_EQUALS => b'=',
                _ => 0,
            };
            if is_report(marker, byte) {
                GROUND
            } else {
                INPUT
            }
        }
        _ => INPUT,
    }
}

/// The control sequences terminals send as answers, by private marker and final byte
/// (mode reports, the only ones with an intermediate, are handled by the states).
/// See the module documentation for what each one is.
const fn is_report(marker: u8, fin: u8) -> bool {
    matches!(
        (marker, fin),
        (0 | b'?', b'R' | b'n')
            | (0, b't')
            | (b'?' | b'>' | b'=', b'c')
            | (b'?', b'u' | b'S')
            | (b'>', b'm')
    )
}

/// [`step`] for every state and byte: `NEXT[st << 8 | byte]`.
static NEXT: [u8; state::ROWS * 256] = {
    let mut table = [state::INPUT; state::ROWS * 256];
    let mut i = 0;
    while i < table.len() {
        table[i] = step((i >> 8) as u8, i as u8);
        i += 1;
    }
    table
};

/// True when a write into a pty master holds nothing but terminal answers, judged from
/// `seen`, its first bytes, and `total`, its length.
///
/// Nothing is an answer unless the whole write was read (`seen.len() == total`) or at
/// least [`ANSWER_PREFIX`] bytes of it were. An empty write is not an answer (it is
/// nothing at all; the callers do not count it either way).
#[inline(always)]
pub fn only_answers(seen: &[u8], total: u64) -> bool {
    let len = seen.len();
    let whole = len as u64 == total;
    if len == 0 || (!whole && len < ANSWER_PREFIX) {
        return false;
    }
    let mut st = state::GROUND;
    let mut i = 0;
    while i < ANSWER_PREFIX {
        let Some(&byte) = seen.get(i) else {
            break;
        };
        // The mask keeps the index inside the table whatever `st` holds.
        st = NEXT[((st as usize) & (state::ROWS - 1)) << 8 | byte as usize];
        if st == state::INPUT {
            return false;
        }
        i += 1;
    }
    // The whole write must end between answers; a longer one may cut its last answer.
    st == state::GROUND || !whole
}

/// A piece of a console's input, judged for answers. The console answers into the
/// input a keyboard types into, and a piece of that input (what one receive hands
/// over, what one read takes) may begin anywhere, inside an answer too: a receive
/// takes what fits and is handed the rest again, a reader takes as little as it
/// likes, and where the line discipline's buffer is full, what a read took may
/// already be overwritten by what came next. So a piece is judged from a point the
/// parser does not know ([`Self::unknown`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct AnswerStream(u8);

impl AnswerStream {
    /// The parser somewhere in the stream: until an answer's final byte or the next
    /// `ESC`, the bytes an answer's parameters hold (`0-9 ; : ? > = $ [`) are not
    /// input; any other byte is. So the rest of a control sequence answer is not
    /// input wherever the piece begins, and a letter, Enter, a space or a key's
    /// sequence is. A piece of nothing but digits, or a lone `c`, `n` or `R`, is
    /// missed; the next key counts.
    #[inline(always)]
    pub const fn unknown() -> Self {
        AnswerStream(state::RESYNC)
    }

    /// True when the first `len` bytes of `window`, the next bytes of the piece,
    /// hold input; the parser then starts over between answers.
    ///
    /// A byte the parser takes for input is asked again as from a point it does
    /// not know ([`Self::unknown`]): input only if no answer could hold it. Answers
    /// reach a piece cut and spliced: a console drops the end of an answer that does
    /// not fit its buffer, and a read's bytes in the line discipline's ring may be
    /// overwritten, as it reads, by what comes next. Keys that end in a byte an
    /// answer holds (`CSI … u`, rxvt's `CSI c`) are missed; the next key counts.
    ///
    /// The loop runs over the whole window, a constant count, and skips the bytes
    /// past `len`: a loop bounded by `len` itself is one whose end the 6.1 verifier
    /// cannot tie to the byte it reads, and it refuses the program.
    #[inline(always)]
    pub fn holds_input(&mut self, window: &[u8; ANSWER_PREFIX], len: usize) -> bool {
        let mut i = 0;
        while i < ANSWER_PREFIX {
            if i < len {
                let byte = window[i];
                // The mask keeps the index inside the table whatever the state holds.
                let mut next = NEXT[((self.0 as usize) & (state::ROWS - 1)) << 8 | byte as usize];
                if next == state::INPUT {
                    next = NEXT[(state::RESYNC as usize) << 8 | byte as usize];
                }
                if next == state::INPUT {
                    self.0 = state::GROUND;
                    return true;
                }
                self.0 = next;
            }
            i += 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{string::ToString, vec::Vec};

    use super::*;

    fn whole(bytes: &[u8]) -> bool {
        only_answers(bytes, bytes.len() as u64)
    }

    /// Every answer the module documents, in 7-bit form.
    const ANSWERS: &[&[u8]] = &[
        b"\x1b[24;80R",
        b"\x1b[1;1R",
        b"\x1b[?24;80;1R",
        b"\x1b[?1;2c",
        b"\x1b[?62;22c",
        b"\x1b[?65;1;9;22c",
        b"\x1b[>0;276;0c",
        b"\x1b[>84;0;0c",
        b"\x1b[=0c",
        b"\x1b[0n",
        b"\x1b[3n",
        b"\x1b[?10n",
        b"\x1b[?997;1n",
        b"\x1b[8;24;80t",
        b"\x1b[4;600;800t",
        b"\x1b[6;16;8t",
        b"\x1b[3;0;0t",
        b"\x1b[1t",
        b"\x1b[2t",
        b"\x1b[9;50;200t",
        b"\x1b[?2004;2$y",
        b"\x1b[?1049;1$y",
        b"\x1b[4;2$y",
        b"\x1b[?0u",
        b"\x1b[?15u",
        b"\x1b[>4;1m",
        b"\x1b[?1;0;256S",
        b"\x1b]11;rgb:0000/0000/0000\x07",
        b"\x1b]10;rgb:ffff/ffff/ffff\x1b\\",
        b"\x1b]4;1;rgb:cdcd/0000/0000\x1b\\",
        b"\x1b]l\xc3\xa9t\xc3\xa9 title\x1b\\",
        b"\x1b]52;c;aGVsbG8=\x07",
        b"\x1bP1$r0m\x1b\\",
        b"\x1bP>|tmux 3.3a\x1b\\",
        b"\x1bP1+r544e=787465726d\x1b\\",
        b"\x1bP0+r\x1b\\",
        b"\x1b_Gi=1;OK\x1b\\",
        // A modified F3 in xterm: the bytes of a cursor position report (documented).
        b"\x1b[1;2R",
        b"\x1b[1;5R",
    ];

    /// The same answers in 8-bit form.
    const ANSWERS_8BIT: &[&[u8]] = &[
        b"\x9b24;80R",
        b"\x9b?1;2c",
        b"\x9b>0;276;0c",
        b"\x9b0n",
        b"\x9b8;24;80t",
        b"\x9b?2004;2$y",
        b"\x9b?1u",
        b"\x9d11;rgb:0000/0000/0000\x9c",
        b"\x9d11;rgb:0000/0000/0000\x07",
        b"\x9d11;rgb:0000/0000/0000\x1b\\",
        b"\x901$r0m\x9c",
        b"\x9fGi=1;OK\x9c",
    ];

    /// Keys and everything else a person produces.
    const KEYS: &[&[u8]] = &[
        b"a",
        b"ls -l\r",
        b"\r",
        b"\n",
        b"\x7f",
        b"\x03",
        b"\x04",
        b"\t",
        b" ",
        b"\x1b\x1b",
        b"\x1bx",
        b"\x1bOA",
        b"\x1bOB",
        b"\x1bOP",
        b"\x1bOR",
        b"\x1b[A",
        b"\x1b[B",
        b"\x1b[C",
        b"\x1b[D",
        b"\x1b[H",
        b"\x1b[F",
        b"\x1b[1;5A",
        b"\x1b[1;2D",
        b"\x1b[2~",
        b"\x1b[3~",
        b"\x1b[5~",
        b"\x1b[15~",
        b"\x1b[24;5~",
        b"\x1b[13;2~",
        b"\x1b[Z",
        // rxvt's shifted arrows and its `$`-ended shifted keys.
        b"\x1b[a",
        b"\x1b[c",
        // kitty's keyboard protocol keys (no private marker).
        b"\x1b[97u",
        b"\x1b[97;5u",
        b"\x1b[27u",
        // Mouse: X10 (three raw bytes after `CSI M`) and SGR.
        b"\x1b[M !!",
        b"\x1b[M`\x21\x21",
        b"\x1b[<0;10;5M",
        b"\x1b[<0;10;5m",
        b"\x1b[<64;1;1M",
        b"\x1b[32;10;5M",
        // Bracketed paste.
        b"\x1b[200~hello\x1b[201~",
        b"\x1b[200~",
        b"\x1b[201~",
        // Focus in and out.
        b"\x1b[I",
        b"\x1b[O",
        // 8-bit CSI keys and SS3.
        b"\x9bA",
        b"\x8fA",
        // UTF-8 text.
        "é".as_bytes(),
        "日本".as_bytes(),
        // A plain CSI with `c` is not a device attributes answer.
        b"\x1b[0c",
        // An ANSI `y` without `$` is not a mode report.
        b"\x1b[?1y",
        // Cancelled or broken strings.
        b"\x1b]11;?\x1bx",
        b"\x1b]11;?\x18",
        // A parameter after an intermediate.
        b"\x1b[$1y",
    ];

    /// Writes that end before their sequence does: input when nothing follows (what
    /// follows could still make them an answer, so they are kept out of [`KEYS`]).
    const UNFINISHED: &[&[u8]] = &[
        b"\x1b",
        // rxvt ends shifted keys with `$`: an intermediate byte, so it waits for more.
        b"\x1b[2$",
        b"\x1b[",
        b"\x1b[24;80",
        b"\x1b]11;rgb:0000/0000/0000",
        b"\x1bP1$r0m",
        // 0x9c only ends a string opened by an 8-bit introducer.
        b"\x1b]0;x\x9c",
        b"\x9d11;?\x1b",
    ];

    /// What the Linux console answers (`respond_ID`, status, cursor position): it
    /// answers into its own input, where the console probes see it.
    const CONSOLE_ANSWERS: &[&[u8]] = &[b"\x1b[?6c", b"\x1b[0n", b"\x1b[12;40R"];

    /// Keys of the Linux console that are not xterm's: F1-F5 are `CSI [ A`-`E`.
    const CONSOLE_KEYS: &[&[u8]] = &[b"\x1b[[A", b"\x1b[[E", b"\x1b[1~", b"\x1b[17~"];

    #[test]
    fn the_linux_consoles_answers_are_answers_and_its_keys_are_not() {
        for answer in CONSOLE_ANSWERS {
            assert!(whole(answer), "{answer:?}");
        }
        for key in CONSOLE_KEYS {
            assert!(!whole(key), "{key:?}");
        }
    }

    /// `bytes` (at most a window of them) fed to `stream`.
    fn feed(stream: &mut AnswerStream, bytes: &[u8]) -> bool {
        let mut window = [0xff; ANSWER_PREFIX];
        window[..bytes.len()].copy_from_slice(bytes);
        stream.holds_input(&window, bytes.len())
    }

    /// Input in `piece`, judged from a point the parser does not know.
    fn piece_input(piece: &[u8]) -> bool {
        feed(&mut AnswerStream::unknown(), piece)
    }

    /// The control sequence answers (7-bit; a console's and a serial terminal's).
    fn csi_answers() -> impl Iterator<Item = &'static [u8]> {
        ANSWERS
            .iter()
            .chain(CONSOLE_ANSWERS)
            .copied()
            .filter(|a| a.starts_with(b"\x1b["))
    }

    #[test]
    fn answers_cut_into_pieces_anywhere_hold_no_input() {
        let all: Vec<u8> = csi_answers().flatten().copied().collect();
        for size in 1..=ANSWER_PREFIX {
            for start in 0..size {
                for piece in all[start..].chunks(size) {
                    assert!(
                        !piece_input(piece),
                        "{piece:?} (pieces of {size} from {start})"
                    );
                }
            }
        }
    }

    #[test]
    fn answers_spliced_anywhere_hold_no_input() {
        let all: Vec<u8> = csi_answers().flatten().copied().collect();
        for cut in 0..all.len() {
            for resume in 0..all.len() {
                let piece = [&all[..cut], &all[resume..]].concat();
                let piece = &piece[cut.saturating_sub(32)..];
                let piece = &piece[..piece.len().min(ANSWER_PREFIX)];
                assert!(!piece_input(piece), "{piece:?}");
            }
        }
    }

    /// Keys made only of bytes an answer holds: missed on a console.
    const KEYS_LIKE_ANSWERS: &[&[u8]] = &[
        // `ESC ESC`, a lone Escape pressed twice, waits for the key that follows it.
        b"\x1b\x1b",
        b"\x1b[c",
        b"\x1b[0c",
        b"\x1b[97u",
        b"\x1b[97;5u",
        b"\x1b[27u",
        b"\x1b[?1y",
        b"\x1b[$1y",
    ];

    #[test]
    fn a_key_counts_wherever_its_piece_begins() {
        for key in KEYS_LIKE_ANSWERS {
            assert!(!piece_input(key), "{key:?}");
        }
        let keys = KEYS.iter().chain(CONSOLE_KEYS);
        for key in keys.filter(|k| !KEYS_LIKE_ANSWERS.contains(k)) {
            assert!(piece_input(key), "{key:?}");
            for answer in csi_answers() {
                for cut in 0..answer.len() {
                    let piece = [&answer[cut..], key].concat();
                    let piece = &piece[..piece.len().min(ANSWER_PREFIX)];
                    assert!(piece_input(piece), "{piece:?}");
                }
            }
        }
    }

    #[test]
    fn answers_cut_short_by_a_full_buffer_hold_no_input() {
        // The console dropped the ends of two answers.
        assert!(!piece_input(b"\x1b[?6c\x1b[?\x1b[12;4\x1b[0n\x1b[?6c"));
        // A key after a cut answer still counts.
        assert!(piece_input(b"\x1b[12;4\x1bOA"));
        assert!(piece_input(b"\x1b[?6x"));
    }

    #[test]
    fn a_piece_of_digits_or_an_answers_last_letter_is_missed_and_the_next_key_counts() {
        for piece in [&b"6c"[..], b"123", b"c", b"n", b";40R"] {
            assert!(!piece_input(piece), "{piece:?}");
        }
        for piece in [
            &b"ls\r"[..],
            b"x",
            b"\r",
            b" ",
            b"\x1bOA",
            b"\x1b[A",
            b"cat",
        ] {
            assert!(piece_input(piece), "{piece:?}");
        }
    }

    #[test]
    fn every_answer_is_an_answer() {
        for a in ANSWERS.iter().chain(ANSWERS_8BIT) {
            assert!(
                whole(a),
                "{:?} should be an answer",
                a.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn every_key_is_input() {
        for k in KEYS.iter().chain(UNFINISHED) {
            assert!(
                !whole(k),
                "{:?} should be input",
                k.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn answers_in_a_row_are_answers() {
        let mut all = Vec::new();
        for a in ANSWERS.iter().chain(ANSWERS_8BIT).take(6) {
            all.extend_from_slice(a);
        }
        assert!(all.len() <= ANSWER_PREFIX);
        assert!(whole(&all));
    }

    #[test]
    fn a_key_among_answers_is_input() {
        for a in ANSWERS.iter().chain(ANSWERS_8BIT) {
            for k in KEYS {
                for bytes in [[*a, *k].concat(), [*k, *a].concat()] {
                    if bytes.len() <= ANSWER_PREFIX {
                        assert!(
                            !whole(&bytes),
                            "{:?} should be input",
                            bytes.escape_ascii().to_string()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_write_is_judged_whole_or_by_a_full_prefix() {
        let report = b"\x1b[24;80R";
        // Only part of a short write was read: it may hide a key.
        assert!(!only_answers(report, report.len() as u64 + 1));
        // A burst of answers longer than the prefix: its first bytes decide, the last
        // answer cut off at the limit.
        let burst: Vec<u8> = report.iter().copied().cycle().take(200).collect();
        let prefix = &burst[..ANSWER_PREFIX];
        assert!(only_answers(prefix, burst.len() as u64));
        // Cut inside a string too.
        let mut osc = b"\x1b]l".to_vec();
        osc.resize(300, b'x');
        assert!(only_answers(&osc[..ANSWER_PREFIX], 300));
        // A long paste, long typed-ahead text, or answers then a key within the prefix.
        let paste: Vec<u8> = b"\x1b[200~".iter().copied().chain([b'x'; 100]).collect();
        assert!(!only_answers(&paste[..ANSWER_PREFIX], 106));
        assert!(!only_answers(&[b'a'; ANSWER_PREFIX], 1000));
        let mut mixed = report.to_vec();
        mixed.extend_from_slice(b"\x1b[A");
        mixed.resize(ANSWER_PREFIX, b'x');
        assert!(!only_answers(&mixed, 1000));
    }

    #[test]
    fn no_answer_is_shorter_than_the_shortest() {
        for a in ANSWERS.iter().chain(ANSWERS_8BIT) {
            assert!(a.len() as u64 >= SHORTEST_ANSWER);
        }
        assert!(whole(b"\x9bn"));
        for b in 0..=255u8 {
            assert!(!whole(&[b]), "byte {b:#x} alone should be input");
        }
    }

    #[test]
    fn nothing_is_not_an_answer() {
        assert!(!only_answers(&[], 0));
        assert!(!only_answers(&[], 10));
    }

    #[test]
    fn bytes_past_the_prefix_are_never_read() {
        // A caller that passes more than the prefix is judged on the prefix only.
        let mut bytes: Vec<u8> = b"\x1b[0n".repeat(16);
        assert_eq!(bytes.len(), ANSWER_PREFIX);
        bytes.extend_from_slice(b"typed");
        assert!(only_answers(&bytes, bytes.len() as u64 + 100));
    }

    mod prop {
        extern crate std;
        use std::vec::Vec;

        use proptest::prelude::*;

        use super::{ANSWERS, KEYS};
        use crate::answers::{ANSWER_PREFIX, only_answers};

        /// Bytes that terminals and people produce, plus any byte at all.
        fn fragment() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::sample::select(ANSWERS).prop_map(<[u8]>::to_vec),
                proptest::sample::select(KEYS).prop_map(<[u8]>::to_vec),
                proptest::collection::vec(any::<u8>(), 0..8),
            ]
        }

        proptest! {
            #[test]
            fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                            extra in 0u64..1000) {
                let total = bytes.len() as u64 + extra;
                let _ = only_answers(&bytes, total);
                let _ = only_answers(&bytes, bytes.len() as u64);
                let _ = only_answers(&bytes, 0);
            }

            #[test]
            fn a_key_alone_or_first_always_counts(key in proptest::sample::select(KEYS),
                                                  rest in proptest::collection::vec(fragment(), 0..6),
                                                  extra in 0u64..1000) {
                let mut bytes = key.to_vec();
                for f in rest {
                    bytes.extend(f);
                }
                let seen = &bytes[..bytes.len().min(ANSWER_PREFIX)];
                prop_assert!(!only_answers(seen, bytes.len() as u64 + extra));
            }

            #[test]
            fn a_key_after_answers_counts_when_seen(answers in proptest::collection::vec(
                                                        proptest::sample::select(ANSWERS), 0..4),
                                                    key in proptest::sample::select(KEYS)) {
                let mut bytes: Vec<u8> = answers.concat();
                bytes.extend_from_slice(key);
                prop_assume!(bytes.len() <= ANSWER_PREFIX);
                prop_assert!(!only_answers(&bytes, bytes.len() as u64));
            }

            #[test]
            fn answers_alone_never_count(answers in proptest::collection::vec(
                                             proptest::sample::select(ANSWERS), 1..30)) {
                let bytes: Vec<u8> = answers.concat();
                let seen = &bytes[..bytes.len().min(ANSWER_PREFIX)];
                prop_assert!(only_answers(seen, bytes.len() as u64));
            }
        }
    }
}
