//! Plain-text tables for people reading a terminal: columns aligned, long cells cut.

/// Longest cell printed, in characters.
const CELL_MAX_CHARS: usize = 48;

fn cut(s: &str) -> String {
    let s = s.replace(['\n', '\t'], " ");
    if s.chars().count() <= CELL_MAX_CHARS {
        s
    } else {
        let head: String = s.chars().take(CELL_MAX_CHARS - 1).collect();
        format!("{head}…")
    }
}

/// Renders rows under a header, columns padded to their widest cell.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths.get(i).copied().unwrap_or(0);
                format!("{c:<pad$}")
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}
