"""The history page's filters: by status and by a piece of the prompt, kept by the pager."""

import html as html_lib
import re

from tests.support import ApiClient, batch_body, create_user, drain, signed_in_browser


def prompts_listed(page):
    """The prompts of the history table's rows, in order ([] when there is no table)."""
    if "<tbody>" not in page:
        return []
    body = page.split("<tbody>")[1]
    cells = re.findall(r'data-label="Prompt">(.*?)</td>', body, re.S)
    return [html_lib.unescape(cell) for cell in cells]


def post_batch(client, prompt, count=1):
    response = client.post("/api/generate/batch", json=batch_body(count, prompt=prompt))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["batchId"]


def test_history_filters_by_status(app, user):
    alice = ApiClient(app, *user)
    post_batch(alice, "done one")
    drain(app)
    cancelled = post_batch(alice, "stopped one")
    alice.post(f"/api/generate/batch/{cancelled}/cancel")
    post_batch(alice, "waiting one")
    http = signed_in_browser(app, user[1])

    assert prompts_listed(http.get("/batches?status=completed").get_data(as_text=True)) == [
        "done one"
    ]
    assert prompts_listed(http.get("/batches?status=cancelled").get_data(as_text=True)) == [
        "stopped one"
    ]
    assert prompts_listed(http.get("/batches?status=queued").get_data(as_text=True)) == [
        "waiting one"
    ]
    both = http.get("/batches?status=queued&status=completed").get_data(as_text=True)
    assert prompts_listed(both) == ["waiting one", "done one"]
    assert prompts_listed(http.get("/batches?status=").get_data(as_text=True)) == [
        "waiting one",
        "stopped one",
        "done one",
    ]
    page = http.get("/batches?status=failed").get_data(as_text=True)
    assert prompts_listed(page) == []
    assert "No batch matches" in page and "with status failed" in page
    # The form keeps the choice it was sent.
    assert '<option value="failed" selected>' in page


def test_history_searches_the_prompt_case_insensitively(app, user):
    alice = ApiClient(app, *user)
    post_batch(alice, "Red Fox in the snow")
    post_batch(alice, "a blue whale")
    post_batch(alice, "FOXGLOVE flowers")
    http = signed_in_browser(app, user[1])

    page = http.get("/batches?q=fox").get_data(as_text=True)
    assert prompts_listed(page) == ["FOXGLOVE flowers", "Red Fox in the snow"]
    assert 'name="q" value="fox"' in page
    assert prompts_listed(http.get("/batches?q=rEd+FOX").get_data(as_text=True)) == [
        "Red Fox in the snow"
    ]
    assert prompts_listed(http.get("/batches?q=++whale++").get_data(as_text=True)) == [
        "a blue whale"
    ]
    none = http.get("/batches?q=zebra").get_data(as_text=True)
    assert prompts_listed(none) == [] and "No batch matches “zebra”" in none
    mixed = http.get("/batches?q=fox&status=cancelled").get_data(as_text=True)
    assert prompts_listed(mixed) == []


def test_percent_and_underscore_in_a_search_are_plain_characters(app, user):
    alice = ApiClient(app, *user)
    for prompt in ("100% cotton", "100 percent cotton", "snake_case name", "snakeXcase name"):
        post_batch(alice, prompt)
    post_batch(alice, r"back\slash")
    http = signed_in_browser(app, user[1])

    assert prompts_listed(http.get("/batches?q=100%25").get_data(as_text=True)) == ["100% cotton"]
    assert prompts_listed(http.get("/batches?q=e_c").get_data(as_text=True)) == ["snake_case name"]
    assert prompts_listed(http.get("/batches?q=%25").get_data(as_text=True)) == ["100% cotton"]
    assert prompts_listed(http.get("/batches?q=_").get_data(as_text=True)) == ["snake_case name"]
    assert prompts_listed(http.get("/batches?q=k%5Cs").get_data(as_text=True)) == [r"back\slash"]
    assert prompts_listed(http.get("/batches?q=%2F").get_data(as_text=True)) == []


def test_the_pager_keeps_the_filter(app, user):
    alice = ApiClient(app, *user)
    post_batch(alice, "a dog, oldest")
    for number in range(21):
        post_batch(alice, f"cat number {number:02d}")
    post_batch(alice, "a dog, newest")
    http = signed_in_browser(app, user[1])

    first = http.get("/batches?q=cat&status=queued").get_data(as_text=True)
    listed = prompts_listed(first)
    assert len(listed) == 20 and all(prompt.startswith("cat number") for prompt in listed)
    older = re.search(r'href="([^"]+)" rel="next">Older', first).group(1)
    assert older == "/batches?page=2&amp;status=queued&amp;q=cat"

    second = http.get(html_lib.unescape(older)).get_data(as_text=True)
    assert prompts_listed(second) == ["cat number 00"]
    newer = re.search(r'href="([^"]+)" rel="prev">', second).group(1)
    assert newer == "/batches?page=1&amp;status=queued&amp;q=cat"
    assert "Older" not in second


def test_another_users_batches_never_show(app, user):
    alice = ApiClient(app, *user)
    post_batch(alice, "shared words, alice's")
    otto = ApiClient(app, *create_user(app, "otto"))
    post_batch(otto, "shared words, otto's")
    post_batch(otto, "only otto has this")
    drain(app)
    http = signed_in_browser(app, user[1])

    assert prompts_listed(http.get("/batches?q=shared").get_data(as_text=True)) == [
        "shared words, alice's"
    ]
    assert prompts_listed(http.get("/batches?status=completed").get_data(as_text=True)) == [
        "shared words, alice's"
    ]
    page = http.get("/batches?q=only+otto").get_data(as_text=True)
    assert (
        prompts_listed(page) == []
        and "No batch matches" in page
        and "otto" not in page.split('id="history-results"')[1].replace("only otto", "")
    )


def test_bad_filter_values_are_ignored_with_a_message(app, user):
    alice = ApiClient(app, *user)
    post_batch(alice, "the only batch")
    http = signed_in_browser(app, user[1])

    unknown = http.get("/batches?status=<b>done</b>")
    assert unknown.status_code == 200
    page = unknown.get_data(as_text=True)
    assert prompts_listed(page) == ["the only batch"]
    assert "Unknown status “&lt;b&gt;done&lt;/b&gt;” ignored" in page and "<b>done" not in page

    long = http.get("/batches", query_string={"q": "x" * 201})
    assert long.status_code == 200
    page = long.get_data(as_text=True)
    assert prompts_listed(page) == ["the only batch"]
    assert "Search ignored: it is longer than 200 characters." in page

    odd = http.get("/batches", query_string={"q": "\x00 é ünïcode", "status": ["queued"] * 50})
    assert odd.status_code == 200 and "No batch matches" in odd.get_data(as_text=True)
    assert http.get("/batches?page=abc&status=queued").status_code == 200


def test_htmx_gets_only_the_results_and_the_form_works_without_it(app, user):
    alice = ApiClient(app, *user)
    post_batch(alice, "first prompt")
    post_batch(alice, "second prompt")
    http = signed_in_browser(app, user[1])

    page = http.get("/batches").get_data(as_text=True)
    form = re.search(r'<form class="history-filter"[^>]*>', page, re.S).group(0)
    assert 'method="get"' in form and 'action="/batches"' in form
    assert 'hx-target="#history-results"' in form and 'hx-push-url="true"' in form

    fragment = http.get("/batches?q=second", headers={"HX-Request": "true"})
    text = fragment.get_data(as_text=True)
    assert "<html" not in text and "history-filter" not in text
    assert prompts_listed(text) == ["second prompt"]
    assert "HX-Request" in fragment.headers["Vary"]
    restored = http.get(
        "/batches?q=second",
        headers={"HX-Request": "true", "HX-History-Restore-Request": "true"},
    ).get_data(as_text=True)
    assert "<html" in restored and prompts_listed(restored) == ["second prompt"]


def test_no_batches_yet_shows_no_filter_form(app, user):
    page = signed_in_browser(app, user[1]).get("/batches").get_data(as_text=True)

    assert "No batches yet" in page and "history-filter" not in page
