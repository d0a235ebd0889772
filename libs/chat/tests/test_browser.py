"""The web page in a real browser (Debian's Chromium driven by Playwright) next to a line-protocol
client, over one chat. Skipped without /usr/bin/chromium unless ISTHMUS_REQUIRE_BROWSER=1."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from _client import LineClient
from _uvicorn import UvicornServer
from isthmus.chat import Chat, LineProtocolServer
from isthmus.chat._web import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
XSS = "<img src=x onerror=alert(1)>"


def _browser_or_skip() -> Any:
    why = None
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        why = "the playwright package is not installed"
    else:
        if not os.path.exists(CHROMIUM):
            why = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if why is not None:
        if os.environ.get("ISTHMUS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ISTHMUS_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    return async_playwright


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Any]:
    async_playwright = _browser_or_skip()
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


class Tab:
    """One browser page with the chat open; records console errors and dialogs."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        page.on("dialog", lambda d: self.problems.append("dialog: " + d.message))

    @classmethod
    async def open(cls, browser: Any, url: str, nick: str) -> Tab:
        from playwright.async_api import expect

        context = await browser.new_context()
        tab = cls(await context.new_page())
        await tab.page.goto(url)
        await tab.page.fill("#nick", nick)
        await tab.page.click("#enter")
        await expect(tab.page.locator("#conn")).to_have_text("online")
        await expect(tab.page.locator("#room-title")).to_have_text("#main")
        return tab

    def messages(self, text: str) -> Any:
        return self.page.locator("#messages li.msg", has_text=text)

    def member(self, nick: str) -> Any:
        return self.page.locator("#members li", has_text=nick)

    async def say(self, text: str) -> None:
        await self.page.fill("#text", text)
        await self.page.press("#text", "Enter")

    async def close(self) -> None:
        await self.page.context.close()


@pytest.mark.asyncio
async def test_pages_and_a_line_client_chat_together(
    browser: Any, chat: Chat, line_server: LineProtocolServer
) -> None:
    from playwright.async_api import expect

    line = await LineClient.open(line_server.port)
    tabs: list[Tab] = []
    try:
        async with UvicornServer(create_app(chat)) as srv:
            assert await line.ask("HELLO main:liner") == "OK HELLO liner main"
            assert (await line.ask("SEND main said before you came")).startswith("OK SEND")

            alice = await Tab.open(browser, srv.url + "/", "alice")
            tabs.append(alice)
            # History is loaded on join; presence lists the line client.
            await expect(alice.messages("said before you came")).to_have_count(1)
            await expect(alice.member("liner")).to_have_count(1)

            bob = await Tab.open(browser, srv.url + "/", "bob")
            tabs.append(bob)
            await expect(alice.member("bob")).to_have_count(1)  # a join event updated it
            await expect(bob.member("alice")).to_have_count(1)
            await expect(bob.messages("said before you came")).to_have_count(1)

            await alice.say("hello bob")
            await expect(bob.messages("hello bob")).to_have_count(1)
            assert await line.until("MSG main alice") == "MSG main alice 2 hello bob"

            assert (await line.ask("SEND main hi pages")).startswith("OK SEND main 3")
            for tab in (alice, bob):
                await expect(tab.messages("hi pages")).to_have_count(1)

            # Markup in a message is text: no element is created and no script runs.
            await bob.say(XSS)
            shown = alice.page.locator("#messages li.msg .text", has_text="onerror")
            await expect(shown).to_have_text(XSS)
            assert await alice.page.locator("img").count() == 0
            assert await bob.page.locator("img").count() == 0
            assert await line.until("MSG main bob") == f"MSG main bob 4 {XSS}"

            # bob leaves: alice's member list follows.
            await bob.close()
            tabs.remove(bob)
            await expect(alice.member("bob")).to_have_count(0)

            # The server drops alice's socket; what is said meanwhile arrives after the page
            # reconnects (resume), once, and nothing she had is repeated.
            alice_sink = chat.session("alice").sink
            assert alice_sink is not None
            alice_sink.close("server shutting down")
            assert (await line.ask("SEND main while you were away")).startswith("OK SEND main 5")
            await expect(alice.messages("while you were away")).to_have_count(1)
            await expect(alice.page.locator("#conn")).to_have_text("online")
            assert chat.session("alice").front == "ws"
            assert (await line.ask("SEND main welcome back")).startswith("OK SEND main 6")
            await expect(alice.messages("welcome back")).to_have_count(1)
            seqs = await alice.page.locator("#messages li.msg").evaluate_all(
                "items => items.map(li => Number(li.dataset.seq))"
            )
            assert seqs == [1, 2, 3, 4, 5, 6]

            # The page ran under its Content-Security-Policy without a violation or an error.
            for tab in tabs:
                assert tab.problems == []
            for tab in tabs:
                await tab.close()
            tabs.clear()
    finally:
        for tab in tabs:
            await tab.close()
        await line.close()


@pytest.mark.asyncio
async def test_accounts_rooms_and_refusals_in_the_page(browser: Any, chat: Chat) -> None:
    from playwright.async_api import expect

    async with UvicornServer(create_app(chat)) as srv:
        context = await browser.new_context()
        try:
            tab = Tab(await context.new_page())
            page = tab.page
            await page.goto(srv.url + "/")
            # Create an account, then use it: the name is reserved for it.
            await page.fill("#nick", "erin")
            await page.fill("#password", "pw-erin")
            await page.click("#register")
            await expect(page.locator("#who")).to_have_text("erin (account)")
            assert chat.session("erin").account == "erin"

            # Join (create) a room: erin owns it; the room list shows it.
            await page.fill("#join-room", "#Garden")
            await page.press("#join-room", "Enter")
            await expect(page.locator("#room-title")).to_have_text("#garden")
            assert chat.room("garden").record.owner == "erin"
            await expect(page.locator("#rooms li", has_text="garden")).to_have_count(1)
            await tab.say("first in the garden")
            await expect(tab.messages("first in the garden")).to_have_count(1)

            # A second tab may not take the account's name as a guest.
            other = Tab(await context.new_page())
            await other.page.goto(srv.url + "/")
            await other.page.fill("#nick", "erin")
            await other.page.click("#enter")
            await expect(other.page.locator("#login-error")).to_contain_text("registered account")
            assert chat.session("erin").front == "ws"
            assert tab.problems == []
        finally:
            await context.close()
