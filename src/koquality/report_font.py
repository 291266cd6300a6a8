"""The report's fonts: Hangul in the figures and in the page, without touching anyone's matplotlib state.

matplotlib's default DejaVu Sans has no Hangul: a Korean source name or instruction in a figure became tofu
boxes and a `Glyph … missing from font(s) DejaVu Sans` warning. The font is Nanum Gothic from the
`koreanize-matplotlib` package (a core dependency: an 8 MB wheel of four Nanum Gothic weights, MIT/OFL) — found
with importlib.util.find_spec, not imported, because importing it calls its koreanize(), which rewrites the
global rcParams of whoever uses koquality as a library. Without it, the first installed font from HANGUL_FONTS
(Noto Sans CJK KR and friends). The family is registered with matplotlib's font manager (that adds a family; it
changes no default) and set only inside `style()`, an rc_context the report builds and saves every figure in;
DejaVu Sans stays second in the family list for the few glyphs Nanum Gothic lacks (− U+2212).

The HTML page gets the same font, cut down by fontTools (a matplotlib dependency) to the characters the page
uses and inlined as WOFF, so Hangul shows in a browser on a machine without Korean fonts and the page still
makes no request.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import io
import logging
from pathlib import Path

log = logging.getLogger("koquality")

# Installed fonts with Hangul, in order of preference, when koreanize-matplotlib is not installed.
HANGUL_FONTS = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "Source Han Sans K", "Source Han Sans KR",
                "Malgun Gothic", "Apple SD Gothic Neo", "AppleGothic", "UnDotum", "Baekmuk Gulim",
                "Noto Sans CJK JP", "Noto Sans CJK SC", "Droid Sans Fallback")


@functools.lru_cache(maxsize=1)
def korean_font() -> tuple[str | None, str, str | None]:
    """(font family, where it comes from, its file) for Hangul in figures; (None, why, None) when there is none."""
    from matplotlib import font_manager

    # find_spec, not import: importing koreanize_matplotlib calls its koreanize(), which rewrites the global rcParams
    spec = importlib.util.find_spec("koreanize_matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "fonts" / "NanumGothic.ttf"
        if path.is_file():
            font_manager.fontManager.addfont(str(path))  # makes the family known; changes no default
            from importlib.metadata import PackageNotFoundError, version

            try:
                origin = f"koreanize-matplotlib {version('koreanize-matplotlib')}"
            except PackageNotFoundError:
                origin = f"koreanize-matplotlib at {folder}"
            return font_manager.FontProperties(fname=str(path)).get_name(), origin, str(path)
    installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    for name in HANGUL_FONTS:
        if name in installed:
            return name, f"installed font {installed[name]}", installed[name]
    log.warning("report: no font with Hangul found (pip install koreanize-matplotlib); Korean text in figures "
                "will show as boxes")
    return None, "no font with Hangul found: pip install koreanize-matplotlib", None


def style():
    """The report's matplotlib settings, for building and for saving a figure (tick labels are made at draw time)."""
    import matplotlib

    family = korean_font()[0]
    return matplotlib.rc_context({
        "font.family": [family, "DejaVu Sans"] if family else ["DejaVu Sans"],
        "font.size": 9, "figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False,
    })


def styled(build):
    """Build the figure inside style()."""
    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with style():
            return build(*args, **kwargs)

    return wrapper


def figure(**options):
    """A matplotlib Figure without pyplot: no global figure registry, no backend switch."""
    from matplotlib.figure import Figure

    return Figure(**options)


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    with style():
        fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def page_font_css(text: str) -> str:
    """@font-face for the page's own text: the Korean font cut down to the characters `text` uses, inlined as WOFF
    (tens of kB; a few hundred at 20,000 map points), so Hangul shows on a machine with no Korean font and the page
    still makes no request. Only non-ASCII characters: Latin text keeps the reader's own sans-serif."""
    path = korean_font()[2]
    wanted = {ord(c) for c in set(text) if ord(c) > 127}
    if not path or not wanted:
        return ""
    try:
        from fontTools import subset
        from fontTools.ttLib import TTFont

        options = subset.Options()
        options.flavor, options.layout_features, options.hinting, options.name_IDs = "woff", [], False, [1, 2]
        options.drop_tables += ["TSI0", "TSI1", "TSI2", "TSI3", "TSI5", "DSIG"]
        font = TTFont(path, lazy=True, fontNumber=0)
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=wanted)
        subsetter.subset(font)
        buffer = io.BytesIO()
        font.flavor = "woff"
        font.save(buffer)
    except Exception as e:  # a font fontTools cannot cut: the page falls back to the reader's fonts
        log.debug("report: could not inline %s: %s", path, e)
        return ""
    return ("@font-face{font-family:'koquality-hangul';font-display:block;"
            f"src:url(data:font/woff;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}) format('woff')}}")
