"""The correction editor for Gradio's reload mode, while working on the editor itself:

    ANNOTASSIST_WORKSPACE=runs/demo/ws gradio apps/editor.py

Gradio re-imports this file on every change and serves the `demo` it finds. Users run `annotassist ui`.
"""
import os
import sys

from annotassist.ui.editor import build_app

workspace = os.environ.get("ANNOTASSIST_WORKSPACE")
if not workspace:
    sys.exit("set ANNOTASSIST_WORKSPACE to the workspace folder, e.g. ANNOTASSIST_WORKSPACE=runs/demo/ws")
demo = build_app(workspace)

if __name__ == "__main__":
    demo.launch()
