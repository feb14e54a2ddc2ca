"""What a browser submits for an HTML form: the successful controls, in document order."""

from __future__ import annotations

from html.parser import HTMLParser


class _Controls(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pairs: list[tuple[str, str]] = []
        self._textarea: tuple[str, list[str]] | None = None
        self._select: tuple[str, list[str], list[str]] | None = None
        self._option: tuple[str, bool] | None = None
        self._option_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        named = "name" in a and "disabled" not in a
        if tag == "input" and named:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.pairs.append((a["name"], a.get("value", "on")))
            elif kind not in ("submit", "button", "file"):
                self.pairs.append((a["name"], a.get("value", "")))
        elif tag == "textarea" and named:
            self._textarea = (a["name"], [])
        elif tag == "select" and named:
            self._select = (a["name"], [], [])
        elif tag == "option" and self._select is not None:
            self._option = (a["value"], "selected" in a)

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea" and self._textarea is not None:
            self.pairs.append((self._textarea[0], "".join(self._textarea[1])))
            self._textarea = None
        elif tag == "option" and self._select is not None and self._option is not None:
            value, selected = self._option
            self._select[1].append(value)
            if selected:
                self._select[2].append(value)
            self._option = None
        elif tag == "select" and self._select is not None:
            name, values, chosen = self._select
            if chosen or values:
                self.pairs.append((name, (chosen or values)[-1 if chosen else 0]))
            self._select = None


def submitted(html: str, **changes: str) -> dict[str, list[str]]:
    """The form data a browser sends for `html` unchanged (`changes`: inputs typed into,
    by name, replacing what they held)."""
    parser = _Controls()
    parser.feed(html)
    data: dict[str, list[str]] = {}
    for name, value in parser.pairs:
        data.setdefault(name, []).append(value)
    for name, value in changes.items():
        values = data.get(name)
        if values is None:
            data[name] = [value]
        else:
            values[-1] = value
    return data
