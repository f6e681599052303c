"""SFRS Studio — train: start a run in a background process and watch it (progress, ETA, curves)."""
from __future__ import annotations

import streamlit as st

from sfrs_core.losses import LOSS_TYPES
from sfrs_core.models.backbones import TRUNKS
from sfrs_core.training.background import running_job
from viz_app.guard import may_write
from viz_app.jobs import (APP_PRESETS, TrainOptions, canonical_data, dataset_options, dataset_problem, free_run_name,
                          offline_weights, parse_temperatures, preset_config, training_dir)
from viz_app.state import sidebar
from viz_app.train_panel import start_job, training_monitor
from viz_app.widgets import md_escape

LOSS_NAMES = {"sare_ind": "SARE-ind (the paper's)", "sare_joint": "SARE-joint", "triplet": "triplet (margin √0.1, as OpenIBL)"}
OTHER = "Another path…"

sel = sidebar()
folder = training_dir()
st.title("Train")
if not may_write():  # viewer mode (or locked): the runs and their progress, no form
    st.caption(f"Runs of {md_escape(folder)}: their progress, curves and recall. Starting, stopping and "
               f"resuming trainings is not open to visitors of this server.")
    training_monitor(folder)
    st.stop()
st.caption(f"Training runs in a background process: it goes on when you leave or reload this page, and one "
           f"runs at a time. New runs are written to {md_escape(folder)}; finished generations appear in every "
           f"page's run list.")

busy = running_job(folder)
if busy is not None:
    st.info(f"{md_escape(busy.name)} is being trained; a new run can start when it ends (or is stopped below).")

# Preset and dataset sit outside the form: the preset sets the form's defaults, the dataset is checked at once.
left, right = st.columns(2)
preset = left.selectbox("Start from preset", APP_PRESETS, key="tr_preset",
                        help="tiny: a quick check; demo: the shipped demo models (CPU, ~30 min); paper: the "
                             "paper's VGG16 set-up (a GPU and a real dataset)")
options = dataset_options()
choices = options + [OTHER]
default_data = sel.data if sel is not None and sel.data in options else None
pick = right.selectbox("Dataset", choices, index=choices.index(default_data) if default_data else 0, key="tr_data")
data = right.text_input("Dataset path", key="tr_data_path", placeholder="folder or .mat file") if pick == OTHER else pick
data = canonical_data(data)
problem = dataset_problem(data) if data else None
if problem:
    right.error(md_escape(problem))

cfg = preset_config(preset, data or "data")
with st.form("tr_form"):
    c1, c2, c3 = st.columns(3)
    trunk = c1.selectbox("Trunk", TRUNKS, index=TRUNKS.index(cfg.model.trunk), key=f"tr_trunk_{preset}",
                         format_func=lambda t: t + ("" if offline_weights(t) else " (no ImageNet weights here)"),
                         help="Only MobileNetV2's ImageNet weights ship with the app; the other trunks start "
                              "from random weights unless torch's hub cache holds theirs.")
    loss = c2.selectbox("Loss", LOSS_TYPES, index=LOSS_TYPES.index(cfg.loss), key=f"tr_loss_{preset}",
                        format_func=LOSS_NAMES.get)
    name = c3.text_input("Run name", key="tr_name", placeholder=free_run_name(f"{preset}-run"),
                         help="A folder name in the training folder; left empty, the placeholder is used")
    c1, c2, c3, c4 = st.columns(4)
    generations = c1.number_input("Generations", 1, 10, cfg.generations, key=f"tr_gens_{preset}",
                                  help="1 trains the baseline (no self-supervision); the paper uses 4")
    epochs = c2.number_input("Epochs per generation", 1, 100, cfg.epochs, key=f"tr_epochs_{preset}")
    temps = c3.text_input("Teacher temperatures", ", ".join(f"{t:g}" for t in cfg.temperatures),
                          key=f"tr_temps_{preset}", help="One per generation (the last repeats); the paper's: "
                                                          "0.07, 0.07, 0.06, 0.05")
    lam = c4.number_input("λ (soft loss weight)", 0.0, 10.0, float(cfg.lambda_soft), step=0.1, key=f"tr_lambda_{preset}")
    submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    try:
        temperatures = parse_temperatures(temps)
    except ValueError as err:
        st.error(f"Not started: {md_escape(err)}")
    else:
        run = name.strip() or free_run_name(f"{preset}-run")
        opts = TrainOptions(data, preset, loss=loss, generations=int(generations), epochs=int(epochs), trunk=trunk,
                            temperatures=temperatures, lambda_soft=float(lam))
        if start_job(run, opts):
            st.success(f"Started {md_escape(run)} in the background.")

st.divider()
training_monitor(folder)
