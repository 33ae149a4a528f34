"""The prompt box of the text-to-image models: a length-bounded text field with example prompts
in several languages and a hint of what the bundled text encoder understands. It replaces the
class picker while a text model is active (ui/context.py, condition_updates)."""
from __future__ import annotations

import gradio as gr

from nar.captions import LOCALES

EXAMPLE_PROMPTS = ("cat face", "red heart", "flag: Japan", "grinning face", "rocket", "Katzengesicht",
                   "cœur rouge", "猫の顔", "кошачья морда")
MAX_PROMPT_CHARS = 48          # the text encoder's 48 UTF-8 bytes; the request says it exactly
LANGUAGE_HINT = ("an emoji's name or a few keywords, as the Unicode CLDR names them, in one of "
                 f"{len(LOCALES)} languages ({', '.join(LOCALES)}); up to 48 bytes of UTF-8 (about 48 Latin, "
                 "24 Cyrillic or 16 Chinese / Japanese characters)")


def prompt_box(visible: bool, elem_id: str):
    """(the column holding it, the textbox): call inside a layout block."""
    with gr.Column(visible=visible, elem_id=f"{elem_id}-col") as column:
        box = gr.Textbox("cat face", label="Prompt", info=LANGUAGE_HINT, max_lines=1, max_length=MAX_PROMPT_CHARS,
                         elem_id=elem_id, placeholder="cat face")
        gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[box], label="Example prompts",
                    examples_per_page=len(EXAMPLE_PROMPTS), api_name=f"example_{elem_id.replace('-', '_')}",
                    api_visibility="undocumented")
    return column, box


def subject(models, class_name, prompt):
    """What the request is conditioned on: the prompt for text models, else the class."""
    return prompt if models.is_text else class_name
