"""The screens a person works in: the Gradio correction editor and what it does to a workspace."""
