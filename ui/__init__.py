"""NAR Studio's web UI: the only package that imports gradio. See ARCHITECTURE.md for its modules."""
