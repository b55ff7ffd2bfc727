"""Tables for papers: Markdown, LaTeX (booktabs) and CSV from pandas frames.

``mean_std_table`` pivots a summary (one row per setting and compared value) into the usual
paper layout: one row per setting, one column per compared value, cells "mean ± std", the
best mean of each row marked (bold in Markdown and LaTeX, a ``best`` column in CSV).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
}


def latex_escape(text: object) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cells_and_flags(df: pd.DataFrame, bold: pd.DataFrame | None) -> tuple[list[list], list[list[bool]]]:
    """The cells of ``df`` row by row (Python objects) and whether each is bold."""
    values = df.to_numpy(dtype=object).tolist()
    if bold is None:
        return values, [[False] * len(df.columns)] * len(df)
    return values, bold.to_numpy(dtype=bool).tolist()


def markdown_table(df: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    """GitHub Markdown table of ``df`` (``bold``: same-shape boolean frame of cells to embolden)."""
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = []
    values, flags = _cells_and_flags(df, bold)  # plain arrays: df.iat per cell was the slow part
    for value_row, flag_row in zip(values, flags):
        cells = []
        for value, flag in zip(value_row, flag_row):
            text = _cell(value).replace("|", "\\|")
            if flag and text:
                text = f"**{text}**"
            cells.append(text)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([header, sep, *rows]) + "\n"


def latex_table(
    df: pd.DataFrame, bold: pd.DataFrame | None = None, *, caption: str | None = None, label: str | None = None
) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``); "±" becomes ``$\\pm$``."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) or j >= 1 else "l" for j, c in enumerate(df.columns))
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(c) for c in df.columns) + r" \\")
    lines.append(r"\midrule")
    values, flags = _cells_and_flags(df, bold)
    for value_row, flag_row in zip(values, flags):
        cells = []
        for value, flag in zip(value_row, flag_row):
            text = latex_escape(_cell(value))
            if flag and text:
                text = rf"\textbf{{{text}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def csv_table(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


@dataclass
class MeanStdTable:
    """A paper table: ``display`` (formatted cells), ``bold`` (best per row), ``numeric`` (long form)."""

    display: pd.DataFrame
    bold: pd.DataFrame
    numeric: pd.DataFrame

    def markdown(self) -> str:
        return markdown_table(self.display, self.bold)

    def latex(self, caption: str | None = None, label: str | None = None) -> str:
        return latex_table(self.display, self.bold, caption=caption, label=label)

    def csv(self) -> str:
        return csv_table(self.numeric)


def mean_std_table(
    summary: pd.DataFrame,
    row_keys: list[str],
    col_key: str,
    mean: str = "mean",
    std: str = "std",
    *,
    scale: float = 100.0,
    digits: int = 2,
    higher_is_better: bool = True,
) -> MeanStdTable:
    """Pivot ``summary`` (columns ``row_keys + [col_key, mean, std]``) into "mean ± std" cells.

    Values are multiplied by ``scale`` (accuracy fractions → percent). A missing std (one
    seed) prints the mean alone. Ties for the best mean of a row are all marked.
    """
    wide_mean = summary.pivot_table(index=row_keys, columns=col_key, values=mean, aggfunc="first", sort=True)
    wide_std = summary.pivot_table(index=row_keys, columns=col_key, values=std, aggfunc="first", dropna=False)
    wide_std = wide_std.reindex(index=wide_mean.index, columns=wide_mean.columns)
    best = wide_mean.max(axis=1) if higher_is_better else wide_mean.min(axis=1)
    bold_values = wide_mean.eq(best, axis=0) & wide_mean.notna()
    # Plain loops over numpy values: per-cell ``.iat`` on a 10k-trial table took ~0.3 s.
    def fmt(m: float, s: float) -> str:
        if pd.isna(m):
            return ""
        return f"{m * scale:.{digits}f}" if pd.isna(s) else f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"

    cells = pd.DataFrame([[fmt(m, s) for m, s in zip(mr, sr)] for mr, sr in
                          zip(wide_mean.to_numpy(dtype=float), wide_std.to_numpy(dtype=float))],
                         index=wide_mean.index, columns=wide_mean.columns, dtype=object)
    display = cells.reset_index()
    display.columns = [str(c) for c in display.columns]
    bold = pd.concat(
        [pd.DataFrame(False, index=bold_values.index, columns=row_keys).reset_index(drop=True),
         bold_values.reset_index(drop=True)], axis=1,
    )
    numeric = summary[row_keys + [col_key, mean, std]].copy()
    target = numeric.groupby(row_keys, dropna=False, sort=False)[mean].transform("max" if higher_is_better else "min")
    numeric["best"] = numeric[mean].eq(target)
    return MeanStdTable(display=display, bold=bold, numeric=numeric)
