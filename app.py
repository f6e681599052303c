"""``streamlit run app.py`` in a checkout: the app itself is ``viz_app/app.py`` (package data of
the installed ``sfrs-studio``, which serves that file). ``static`` and ``.streamlit`` here are links
to the package's own, which Streamlit looks for beside the main script and in the working folder."""
import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent / "viz_app" / "app.py"), run_name="__main__")
