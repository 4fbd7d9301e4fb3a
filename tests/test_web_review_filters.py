"""The review's filters in the web page (issue 20), in a real browser
(fixtures of test_web.py) against a real `segdl serve`: besides the glob,
a file type (the extension) and a precision read from the names (fp32,
bf16, fp16, fp8, int8, int4), each offered with its count, combined by
"Select matching".  A manifest is reviewed, so nothing is fetched."""

from __future__ import annotations

import json

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from serving import Serve  # noqa: E402
from test_serve_api import until  # noqa: E402
from test_web import browser, log_in  # noqa: E402,F401 (fixtures)
from test_web_api import login_urls  # noqa: E402

NAMES = {  # path -> (type, precision) as the page should read them
    "unet/diffusion_pytorch_model.fp16.safetensors": ("safetensors", "fp16"),
    "unet/diffusion_pytorch_model.safetensors": ("safetensors", ""),
    "vae/vae-bf16.safetensors": ("safetensors", "bf16"),
    "sd_xl_base_1.0_fp32.ckpt": ("ckpt", "fp32"),
    "flux1-dev-fp8_e4m3fn.safetensors": ("safetensors", "fp8"),
    "llama-3-8b.Q8_0.gguf": ("gguf", "int8"),
    "llama-3-8b.Q4_K_M.gguf": ("gguf", "int4"),
    "fp16/pytorch_model.bin": ("bin", ""),  # (a folder's name says nothing of its files)
    "config.json": ("json", ""),
    "<b>x<b>_fp16.bin": ("bin", "fp16"),
}


def test_review_filters_by_type_and_precision_besides_the_glob(browser, tmp_path):
    serve = Serve(tmp_path / "serve", "-x", "1").start()
    try:
        until(lambda: login_urls(serve), 10)
        page = browser.new_page()
        log_in(page, serve)
        page.click("button[data-view=add]")
        manifest = {"files": [{"url": f"http://127.0.0.1:9/{i}", "path": p, "size": 1000 + i}
                              for i, p in enumerate(NAMES)]}
        page.fill("#add-text", json.dumps(manifest))
        page.click("#review-btn")
        expect(page.locator("#review-rows tr")).to_have_count(len(NAMES))
        for path, (kind, precision) in NAMES.items():
            cells = page.locator(f'#review-rows tr[data-path="{path}"] td')
            expect(cells.nth(2)).to_have_text(kind)
            expect(cells.nth(5)).to_have_text(precision)
        assert page.locator("#review-rows b").count() == 0  # a name is text, never markup
        options = lambda sel: page.locator(f"#{sel} option").all_text_contents()  # noqa: E731
        assert options("type-filter") == ["any type", "safetensors (4)", "bin (2)", "gguf (2)", "ckpt (1)", "json (1)"]
        assert options("precision-filter") == ["any precision", "fp16 (2)", "bf16 (1)", "fp32 (1)", "fp8 (1)",
                                               "int4 (1)", "int8 (1)"]

        def pick(glob: str, kind: str, precision: str) -> list[str]:
            page.fill("#glob", glob)
            page.select_option("#type-filter", kind)
            page.select_option("#precision-filter", precision)
            page.click("#glob-apply")
            boxes = page.locator("#review-rows tr")
            return [boxes.nth(i).get_attribute("data-path") for i in range(boxes.count())
                    if boxes.nth(i).locator("input").is_checked()]

        assert pick("", "gguf", "") == ["llama-3-8b.Q8_0.gguf", "llama-3-8b.Q4_K_M.gguf"]
        expect(page.locator("#review-total")).to_contain_text(f"2 of {len(NAMES)} files selected")
        assert pick("", "safetensors", "fp16") == ["unet/diffusion_pytorch_model.fp16.safetensors"]
        assert pick("", "", "fp16") == ["unet/diffusion_pytorch_model.fp16.safetensors", "<b>x<b>_fp16.bin"]
        assert pick("unet/*", "", "") == ["unet/diffusion_pytorch_model.fp16.safetensors",
                                          "unet/diffusion_pytorch_model.safetensors"]
        assert pick("unet/*", "safetensors", "bf16") == []
        assert pick("*", "", "int8") == ["llama-3-8b.Q8_0.gguf"]
        page.click("#start")
        expect(page.locator("#message")).to_contain_text("1 file(s)")
        status, jobs = serve.call("GET", "/jobs")
        assert [j["requested"] for j in jobs["jobs"]] == [1]
    finally:
        serve.stop()
