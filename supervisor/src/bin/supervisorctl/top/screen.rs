//! The live screen: the terminal's alternate screen in raw mode (keys come as
//! they are typed, Ctrl-C among them), redrawn in place, and the terminal
//! given back as it was when `top` ends however it ends (`q`, Ctrl-C, a
//! signal, an error, a panic).

use std::io::{self, Write};

use crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, style, terminal};
use tokio::sync::mpsc;

use crate::colour;

/// What the keyboard and the terminal ask of `top`.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Quit,
    /// The terminal changed size: draw again.
    Redraw,
}

/// The terminal while `top` owns it; dropping it gives the terminal back.
pub struct Screen {
    out: io::Stdout,
}

impl Screen {
    pub fn open() -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        let mut screen = Self { out: io::stdout() };
        // From here on, Drop gives back whatever was changed.
        execute!(screen.out, terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }

    /// Replaces what is shown with `lines`, cut to the terminal's size.
    pub fn draw(&mut self, lines: &[String]) -> io::Result<()> {
        let (columns, rows) = terminal::size()?;
        for (row, line) in lines.iter().take(usize::from(rows)).enumerate() {
            let row = u16::try_from(row).unwrap_or(u16::MAX);
            queue!(
                self.out,
                cursor::MoveTo(0, row),
                style::Print(colour::fit(line, usize::from(columns))),
                terminal::Clear(terminal::ClearType::UntilNewLine)
            )?;
        }
        queue!(self.out, terminal::Clear(terminal::ClearType::FromCursorDown))?;
        self.out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(self.out, cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Keys and resizes, read on a thread of their own (crossterm's reads block).
/// The thread ends with the process.
pub fn input() -> mpsc::UnboundedReceiver<Input> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            let asked = match crossterm::event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => match k.code {
                    KeyCode::Char('q' | 'Q') | KeyCode::Esc => Some(Input::Quit),
                    KeyCode::Char('c' | 'd') if k.modifiers.contains(KeyModifiers::CONTROL) => Some(Input::Quit),
                    _ => None,
                },
                Ok(Event::Resize(..)) => Some(Input::Redraw),
                Ok(_) => None,
                // No terminal to read from any more: nobody can see the screen either.
                Err(_) => Some(Input::Quit),
            };
            if let Some(a) = asked {
                let quit = a == Input::Quit;
                if tx.send(a).is_err() || quit {
                    return;
                }
            }
        }
    });
    rx
}
