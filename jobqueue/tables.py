"""Tables that fit the width they are drawn at: an 80-column terminal as well as a pipe.

Rich shrinks every column of a table too wide for its console, which cut headings to
``pau…`` and wrapped one dead letter onto ten lines. A :class:`FittedTable` instead decides
at render time, for the width it is given:

1. every column as wide as its longest cell and heading, if that fits;
2. else free-text columns (an error message) cut short with ``…`` to the room left;
3. else the shorter headings;
4. else columns dropped, in the order the table gives, until it fits;
5. else, last, the cells of the widest text columns wrap (their headings stay whole).

Headings are never cut. A caption under the table says which columns were left out and
where to see them (``--json``, or a wider terminal).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table

#: Between two columns: padding, the vertical rule, padding (show_edge and pad_edge off).
COLUMN_GAP = 3
#: A free-text column is never cut narrower than this (or its heading).
FREE_TEXT_MIN = 12


@dataclass(frozen=True)
class Column:
    """One column of a fitted table."""

    key: str
    heading: str
    #: The heading when the full ones do not fit ("" : the same).
    short: str = ""
    #: 0: always shown; otherwise dropped when the table does not fit, lowest first.
    drop: int = 0
    #: Free text: cut short with an ellipsis rather than widening the table.
    free_text: bool = False
    numeric: bool = False

    def title(self, short: bool) -> str:
        return (self.short or self.heading) if short else self.heading


def columns_of(spec: Iterable[Column | tuple[str, str]], numeric: frozenset[str] = frozenset()) -> list[Column]:
    """Columns from (key, heading) pairs (never dropped) or Column objects."""
    return [c if isinstance(c, Column) else Column(c[0], c[1], numeric=c[0] in numeric) for c in spec]


@dataclass(frozen=True)
class Layout:
    columns: list[Column]
    short: bool
    #: The width of each shown column, by key (free-text ones possibly cut to it).
    widths: dict[str, int]
    dropped: list[Column]
    #: Text columns narrower than their longest cell: their cells wrap (the last resort).
    folded: frozenset[str] = frozenset()


def layout(columns: Sequence[Column], cells: Sequence[Mapping[str, str]], width: int) -> Layout | None:
    """The columns, headings and widths that fit ``width`` (see the module); None: nothing does."""
    from rich.cells import cell_len

    def natural(column: Column, short: bool) -> int:
        lines = [line for row in cells for line in row.get(column.key, "").splitlines()]
        return max([cell_len(column.title(short)), *(cell_len(line) for line in lines)])

    def narrowest(column: Column, short: bool, fold: bool = False) -> int:
        if column.free_text:
            return min(natural(column, short), max(cell_len(column.title(short)), FREE_TEXT_MIN))
        if fold and not column.numeric:
            return cell_len(column.title(short))
        return natural(column, short)

    def fit(shown: list[Column], short: bool, fold: bool = False) -> dict[str, int] | None:
        widths = {c.key: narrowest(c, short, fold) for c in shown}
        spare = width - sum(widths.values()) - COLUMN_GAP * (len(shown) - 1)
        if spare < 0:
            return None
        for column in shown:  # the cut free-text columns get the room left, in order
            grow = min(spare, natural(column, short) - widths[column.key])
            widths[column.key] += grow
            spare -= grow
        return widths

    shown = list(columns)
    for short in (False, True):
        widths = fit(shown, short)
        if widths is not None:
            return Layout(shown, short, widths, [])
    dropped: list[Column] = []
    for gone in sorted((c for c in columns if c.drop), key=lambda c: c.drop):
        shown.remove(gone)
        dropped.append(gone)
        widths = fit(shown, True)
        if widths is not None:
            return Layout(shown, True, widths, dropped)
    widths = fit(shown, True, fold=True)
    if widths is None:
        return None
    folded = frozenset(c.key for c in shown if not c.free_text and widths[c.key] < natural(c, True))
    return Layout(shown, True, widths, dropped, folded)


class FittedTable:
    """A rich renderable: the table laid out for the width it is drawn at."""

    def __init__(
        self,
        title: str,
        columns: Sequence[Column],
        cells: Sequence[Mapping[str, str]],
        *,
        caption: str | None = None,
        dropped_hint: str = "--json or a wider terminal shows them",
    ) -> None:
        self.title = title
        self.columns = list(columns)
        self.cells = list(cells)
        self.caption = caption
        self.dropped_hint = dropped_hint

    def table(self, width: int) -> Table:
        from rich.table import Table

        fit = layout(self.columns, self.cells, width)
        if fit is None:  # nothing fits: rich folds the cells, as a plain table would
            fit = Layout(self.columns, True, {}, [])
        notes = [self.caption] if self.caption else []
        if fit.dropped:
            left_out = ", ".join(c.heading for c in fit.dropped)
            notes.append(f"not shown at {width} columns: {left_out} ({self.dropped_hint})")
        table = Table(
            title=self.title,
            title_justify="left",
            caption="\n".join(notes) or None,
            caption_justify="left",
            show_edge=False,
            pad_edge=False,
        )
        for column in fit.columns:
            justify: Literal["left", "right"] = "right" if column.numeric else "left"
            heading = column.title(fit.short)
            cut = fit.widths.get(column.key)
            if cut is None:
                table.add_column(heading, justify=justify, overflow="fold")
            elif column.free_text:
                table.add_column(heading, justify=justify, no_wrap=True, overflow="ellipsis", width=cut)
            elif column.key in fit.folded:
                table.add_column(heading, justify=justify, overflow="fold", width=cut)
            else:
                table.add_column(heading, justify=justify, no_wrap=True, min_width=cut)
        for row in self.cells:
            table.add_row(*(row.get(column.key, "-") for column in fit.columns))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)
