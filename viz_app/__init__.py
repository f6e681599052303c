"""The Streamlit app's own helpers: cached loaders, the shared sidebar, widgets."""
