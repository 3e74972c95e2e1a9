"""ipywidgets front-ends of the four inspectors (embedding map, attention map, retrieval, report).

Each builder returns a widget box whose callbacks only redraw from data computed once (the
session's embeddings, the cached UMAP, heat maps kept by `AttentionInspector`); sliders use
`continuous_update=False`, and anything that runs a model waits for a button or Enter.
Every control carries a `wb-*` CSS class so a browser test can find it.
"""

from __future__ import annotations

import html
from typing import Callable, List, Tuple

import ipywidgets as W
from IPython.display import HTML, display

from workbench.viz.embedding_map import EmbeddingMap
from workbench.viz.heatmaps import METHOD_LABELS, AttentionInspector
from workbench.viz.report_view import report_html
from workbench.viz.retrieval_view import RetrievalInspector


def _show_figure(out: W.Output, draw: Callable[[], object]) -> None:
    """Draw a matplotlib figure into an Output widget (as a PNG), closing it afterwards."""
    import matplotlib.pyplot as plt

    with out:
        out.clear_output(wait=True)
        fig = draw()
        display(fig)
        plt.close(fig)


def error_html(exc: BaseException) -> str:
    """An exception as one escaped line: its text quotes file names and report text, which may
    hold `<`, `&` or markup that must show as written, never render."""
    return f"<p class='wb-error' style='color:#b00020'>{html.escape(f'{type(exc).__name__}: {exc}')}</p>"


def _show_error(out: W.Output, exc: Exception) -> None:
    with out:
        out.clear_output(wait=True)
        display(HTML(error_html(exc)))


def study_options(session, limit: int = 500) -> List[Tuple[str, int]]:
    """(label, row) pairs for a study dropdown: id and the first words of the report."""
    options = []
    for i in range(min(len(session), limit)):
        words = " ".join(session.report(i).split()[:8])
        options.append((f"{session.study_ids()[i]}: {words}...", i))
    return options


def embedding_map_widget(emap: EmbeddingMap, color_by: str = "finding") -> W.VBox:
    """Colouring dropdown + 'join pairs' checkbox over the cached UMAP (redraws only)."""
    colour = W.Dropdown(options=emap.colourings(), value=color_by, description="colour by")
    colour.add_class("wb-embedding-colour")
    join = W.Checkbox(value=False, description="join matched pairs")
    out = W.Output()
    out.add_class("wb-embedding-output")

    def redraw(_=None) -> None:
        _show_figure(out, lambda: emap.plot(colour.value, join.value))

    colour.observe(redraw, names="value")
    join.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox([colour, join]), out])


def attention_widget(inspector: AttentionInspector, study_index: int = 0, text: str = "") -> W.VBox:
    """Study, phrase (OBER mentions or free text), method and, for volumes, a slice slider;
    starts on `study_index` with `text` in the free-text box when given."""
    session = inspector.session
    options = study_options(session)
    study = W.Dropdown(options=options, value=study_index if study_index < len(options) else 0, description="study",
                       layout=W.Layout(width="520px"))
    phrase = W.Dropdown(options=[], description="phrase")
    free_text = W.Text(value=text, placeholder="or type a phrase", description="free text", continuous_update=False)
    method = W.Dropdown(options=[(METHOD_LABELS[m], m) for m in inspector.methods], description="method")
    show = W.Button(description="Show heat map", button_style="primary")
    show.add_class("wb-attention-show")
    is_volume = session.display_image(0).ndim == 3
    depth = session.display_image(0).shape[-1] if is_volume else 1
    slice_slider = W.IntSlider(value=depth // 2, min=0, max=max(depth - 1, 0), description="slice",
                               continuous_update=False, layout=W.Layout(display="flex" if is_volume else "none"))
    out = W.Output()
    out.add_class("wb-attention-output")

    def chosen_phrase() -> str:
        return free_text.value.strip() or (phrase.value or "")

    def refresh_phrases(_=None) -> None:
        choices = inspector.phrases(study.value)
        phrase.options = choices
        phrase.value = choices[0] if choices else None

    def draw(_=None) -> None:
        try:
            _show_figure(out, lambda: inspector.figure(study.value, chosen_phrase(), method.value,
                                                        slice_slider.value if is_volume else None))
        except ValueError as exc:
            _show_error(out, exc)

    study.observe(refresh_phrases, names="value")
    show.on_click(draw)
    slice_slider.observe(draw, names="value")  # redraws from the kept map: no model call
    refresh_phrases()
    draw()
    return W.VBox([study, W.HBox([phrase, free_text]), W.HBox([method, show]), slice_slider, out])


def retrieval_widget(inspector: RetrievalInspector, k: int = 5) -> W.VBox:
    """Free-text query (Enter or Search) or a study's image/report -> top-K with thumbnails."""
    session = inspector.session
    mode = W.ToggleButtons(options=[("free text", "text"), ("study image", "image"), ("study report", "report")],
                           value="text", description="query")
    query = W.Text(value=_default_query(session), description="text", continuous_update=False,
                   layout=W.Layout(width="520px"))
    query.add_class("wb-retrieval-query")
    study = W.Dropdown(options=study_options(session), description="study", layout=W.Layout(width="520px"))
    top_k = W.IntSlider(value=k, min=1, max=min(20, len(session)), description="top K", continuous_update=False)
    search = W.Button(description="Search", button_style="primary")
    search.add_class("wb-retrieval-search")
    result_html = W.HTML()
    result_html.add_class("wb-retrieval-output")
    query_cache: dict = {}

    def run(_=None) -> None:
        key = (mode.value, query.value if mode.value == "text" else study.value, top_k.value)
        if key not in query_cache:
            if mode.value == "text":
                result = inspector.query_text(query.value, top_k.value)
            elif mode.value == "image":
                result = inspector.query_image(study.value, top_k.value)
            else:
                result = inspector.query_report(study.value, top_k.value)
            query_cache[key] = inspector.to_html(result)
        result_html.value = query_cache[key]

    query.observe(run, names="value")
    for control in (mode, study, top_k):
        control.observe(run, names="value")
    search.on_click(run)
    run()
    return W.VBox([mode, W.HBox([query, search]), study, top_k, result_html])


def _default_query(session) -> str:
    from workbench.viz.session import phrase_of, present_findings

    for i in range(len(session)):
        found = present_findings(session.frame.iloc[i])
        if found:
            return phrase_of(found[0])
    return "no acute cardiopulmonary process"


def report_widget(session) -> W.VBox:
    """A study's report with OBER's entities, assertions, severity and location highlighted."""
    study = W.Dropdown(options=study_options(session), description="study", layout=W.Layout(width="520px"))
    view = W.HTML()
    view.add_class("wb-report-output")

    def show(_=None) -> None:
        view.value = report_html(session.report(study.value), session.study_ids()[study.value])

    study.observe(show, names="value")
    show()
    return W.VBox([study, view])
