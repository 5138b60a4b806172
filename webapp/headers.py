"""Security headers on every answer: pages, fragments, the API and media alike.

The pages load nothing from elsewhere and run no inline script or style, so the Content
Security Policy is strict: `'self'` for scripts, styles, fonts and requests, images also from
`data:` and `blob:` (the upload page's thumbnails), no plugins, no `<base>`, forms only to us,
and no framing by anyone. htmx is configured (base.html) to inject no styles and to evaluate
nothing. The one exception is the sign-in page when Telegram sign-in is configured: Telegram's
Login Widget is a script from telegram.org that frames oauth.telegram.org and evaluates its
`data-onauth` callback, so that page alone allows those origins and `'unsafe-eval'`.
"""

from flask import request

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data: blob:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
TELEGRAM_WIDGET = {
    "script-src": "'self' https://telegram.org 'unsafe-eval'",
    "frame-src": "https://oauth.telegram.org",
}
HSTS_SECONDS = 365 * 24 * 3600


def content_security_policy(telegram_widget=False, image_origin=None):
    """The policy; `image_origin`: where presigned image links point (S3), allowed as images."""
    policy = {**POLICY, **(TELEGRAM_WIDGET if telegram_widget else {})}
    if image_origin:
        policy["img-src"] = f"{policy['img-src']} {image_origin}"
    return "; ".join(f"{directive} {sources}" for directive, sources in policy.items())


def init_app(app):
    https = (app.config["PUBLIC_BASE_URL"] or "").startswith("https://")
    policies = {}  # widget or not → the policy, made at the first answer (storage is set up)

    def policy(widget):
        if widget not in policies:
            origin = app.extensions["batchgen.storage"].link_origin()
            policies[widget] = content_security_policy(widget, origin)
        return policies[widget]

    @app.after_request
    def security_headers(response):
        headers = response.headers
        widget = request.endpoint == "auth.login" and app.config["TELEGRAM_BOT_NAME"]
        headers["Content-Security-Policy"] = policy(bool(widget))
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "same-origin"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        # Not the server's name and version (Werkzeug and Python under `flask serve`).
        headers["Server"] = "batchgen"
        if https:
            headers["Strict-Transport-Security"] = f"max-age={HSTS_SECONDS}"
        return response
