"""The HTML side. For now one page that says what runs here and how to use it."""

from flask import Blueprint, current_app, render_template

from ..catalog import load_catalog

bp = Blueprint("web", __name__)


@bp.get("/")
def index():
    return render_template(
        "web/index.html",
        engine=current_app.config["GENERATION_BACKEND"],
        models=list(load_catalog()),
    )
