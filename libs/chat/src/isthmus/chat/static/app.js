// The isthmus chat page: plain DOM and one WebSocket. Every piece of text that a user or the
// server supplies is set with textContent, never parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const same = (a, b) => String(a).toLowerCase() === String(b).toLowerCase();

  const state = {
    nick: null,
    token: null,
    ws: null,
    wanted: false, // the user is logged in: reconnect when the socket drops
    welcomed: false, // a hello succeeded at least once
    retry: false,
    tries: 0,
    nextRef: 1,
    pending: new Map(), // ref -> callback(reply)
    rooms: new Map(), // key (room name, or "@nick" for direct messages) -> room
    current: null,
  };

  function room(key) {
    let r = state.rooms.get(key);
    if (!r) {
      const dm = key.startsWith("@");
      r = {
        key,
        name: dm ? key.slice(1) : key,
        dm,
        joined: dm,
        topic: "",
        members: new Set(),
        seqs: new Set(),
        items: [],
        lastSeq: 0,
        firstSeq: 0,
        unread: false,
      };
      state.rooms.set(key, r);
      renderTabs();
    }
    return r;
  }

  // ------------------------------------------------------------------ connection

  function wsUrl() {
    const url = new URL("ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  function setConn(text, cls) {
    const c = $("conn");
    c.textContent = text;
    c.className = "conn " + cls;
  }

  function request(msg, callback) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      showError("not connected");
      return;
    }
    msg.ref = state.nextRef++;
    if (callback) state.pending.set(msg.ref, callback);
    ws.send(JSON.stringify(msg));
  }

  function connect() {
    const ws = new WebSocket(wsUrl());
    state.ws = ws;
    setConn("connecting", "");
    ws.onopen = () => {
      const hello = { type: "hello", nick: state.nick };
      if (state.token) hello.token = state.token;
      const reconnect = state.welcomed;
      if (reconnect) {
        // Resume: every room with the last message seen, so the server sends what was missed.
        hello.resume = {};
        for (const r of state.rooms.values()) {
          if (!r.dm && r.joined) hello.resume[r.name] = r.lastSeq;
        }
      }
      request(hello, (reply) => {
        if (reply.type === "error") {
          if (reconnect) {
            state.retry = true; // e.g. the old session is not gone yet
          } else {
            state.wanted = false;
            showLogin(reply.detail || reply.code);
          }
          ws.close();
          return;
        }
        welcome(reply, reconnect);
      });
    };
    ws.onmessage = (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      frame(data);
    };
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.pending.clear();
      setConn("offline", "off");
      if (!state.wanted || !state.welcomed) return;
      const final = [1000, 1008, 1009].includes(ev.code) && !state.retry;
      state.retry = false;
      if (final) {
        showError("disconnected: " + (ev.reason || "closed by the server"));
        return;
      }
      const delay = Math.min(10000, 200 * 2 ** state.tries++);
      setConn("reconnecting", "off");
      setTimeout(() => {
        if (state.wanted && !state.ws) connect();
      }, delay);
    };
  }

  function welcome(reply, reconnect) {
    state.welcomed = true;
    state.tries = 0;
    state.nick = reply.nick;
    if (reply.token) state.token = reply.token;
    $("who").textContent = reply.account ? reply.nick + " (account)" : reply.nick;
    $("login").hidden = true;
    $("chat").hidden = false;
    setConn("online", "on");
    for (const info of reply.rooms) updateRoom(info);
    for (const err of reply.errors || []) showError(err.room + ": " + err.detail);
    if (!reconnect) join("main", false);
    refreshRooms();
    render();
  }

  function frame(data) {
    if (data.type === "message") {
      addMessage(data);
    } else if (data.type === "event") {
      onEvent(data);
    } else if (data.ref !== undefined && state.pending.has(data.ref)) {
      const callback = state.pending.get(data.ref);
      state.pending.delete(data.ref);
      callback(data);
    } else if (data.type === "error") {
      showError(data.detail || data.code);
    }
  }

  // ------------------------------------------------------------------ rooms and messages

  function updateRoom(info) {
    const r = room(info.name);
    r.joined = true;
    r.topic = info.topic || "";
    r.members = new Set(info.nicks || []);
    if (state.current === r.key) renderHead();
    return r;
  }

  function join(name, create) {
    request({ type: "join", room: name, create, history: 50 }, (reply) => {
      if (reply.type === "error") {
        showError(reply.detail || reply.code);
        return;
      }
      const r = updateRoom(reply.room);
      select(r.key);
      refreshRooms();
    });
  }

  function refreshRooms() {
    request({ type: "rooms" }, (reply) => {
      if (reply.type !== "rooms") return;
      const list = $("rooms");
      list.replaceChildren();
      for (const info of reply.rooms) {
        const li = el("li");
        const b = el("button", "", info.name + " (" + info.members + ")");
        b.type = "button";
        b.title = info.topic || "";
        b.addEventListener("click", () => {
          const r = state.rooms.get(info.name);
          if (r && r.joined) select(r.key);
          else join(info.name, false);
        });
        li.append(b);
        list.append(li);
      }
    });
  }

  function addMessage(m) {
    const dm = m.kind === "dm";
    const key = dm ? "@" + (same(m.from, state.nick) ? m.to : m.from) : m.room;
    const r = room(key);
    if (r.seqs.has(m.seq)) return; // already shown (a resume that overlapped)
    r.seqs.add(m.seq);
    const item = { seq: m.seq, from: m.from, text: m.text, ts: m.ts };
    let appended = true;
    if (m.seq > r.lastSeq) {
      r.items.push(item);
    } else {
      // Older history: before the first message with a larger seq.
      const at = r.items.findIndex((it) => it.seq !== undefined && it.seq > m.seq);
      r.items.splice(at < 0 ? r.items.length : at, 0, item);
      appended = at < 0;
    }
    r.lastSeq = Math.max(r.lastSeq, m.seq);
    r.firstSeq = r.firstSeq ? Math.min(r.firstSeq, m.seq) : m.seq;
    if (state.current === key) {
      if (appended) appendItem(item);
      else renderMessages();
    } else {
      r.unread = true;
      renderTabs();
    }
  }

  function addNote(r, text) {
    const item = { note: text };
    r.items.push(item);
    if (state.current === r.key) appendItem(item);
  }

  function onEvent(ev) {
    const r = state.rooms.get(ev.room);
    if (!r) return;
    const why = ev.text ? " (" + ev.text + ")" : "";
    switch (ev.event) {
      case "join":
        r.members.add(ev.actor);
        addNote(r, ev.actor + " joined");
        break;
      case "part":
        r.members.delete(ev.actor);
        addNote(r, ev.actor + " left" + why);
        break;
      case "quit":
        r.members.delete(ev.actor);
        addNote(r, ev.actor + " quit" + why);
        break;
      case "kick":
        r.members.delete(ev.target);
        addNote(r, ev.target + " was kicked by " + ev.actor + why);
        if (same(ev.target, state.nick)) r.joined = false;
        break;
      case "topic":
        r.topic = ev.text;
        addNote(r, ev.actor + " set the topic: " + ev.text);
        break;
      case "mode":
        addNote(r, ev.actor + " set mode " + ev.text);
        break;
      default:
        return;
    }
    if (state.current === r.key) renderHead();
  }

  // ------------------------------------------------------------------ rendering

  function itemNode(item) {
    if (item.note !== undefined) return el("li", "event", item.note);
    const li = el("li", "msg");
    li.dataset.seq = String(item.seq);
    const t = el("time", "", new Date(item.ts * 1000).toLocaleTimeString());
    li.append(t, el("span", "from", item.from), el("span", "text", item.text));
    return li;
  }

  function appendItem(item) {
    const list = $("messages");
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 30;
    list.append(itemNode(item));
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function renderMessages() {
    const list = $("messages");
    const r = state.rooms.get(state.current);
    list.replaceChildren(...(r ? r.items.map(itemNode) : []));
    list.scrollTop = list.scrollHeight;
  }

  function renderHead() {
    const r = state.rooms.get(state.current);
    $("room-title").textContent = r ? (r.dm ? "@" + r.name : "#" + r.name) : "";
    $("topic").textContent = r ? r.topic : "";
    $("older").hidden = !r || r.firstSeq <= 1;
    const members = $("members");
    members.replaceChildren();
    if (!r) return;
    const names = [...r.members].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
    for (const nick of names) {
      const li = el("li");
      const b = el("button", "", nick);
      b.type = "button";
      b.title = "direct message";
      b.addEventListener("click", () => {
        if (!same(nick, state.nick)) select(room("@" + nick).key);
      });
      li.append(b);
      members.append(li);
    }
  }

  function renderTabs() {
    const tabs = $("tabs");
    tabs.replaceChildren();
    for (const r of state.rooms.values()) {
      if (!r.joined) continue;
      const li = el("li", state.current === r.key ? "current" : "");
      const b = el("button", r.unread ? "unread" : "", r.dm ? "@" + r.name : "#" + r.name);
      b.type = "button";
      b.addEventListener("click", () => select(r.key));
      li.append(b);
      tabs.append(li);
    }
  }

  function render() {
    renderTabs();
    renderHead();
    renderMessages();
  }

  function select(key) {
    state.current = key;
    const r = state.rooms.get(key);
    if (r) r.unread = false;
    render();
    $("text").focus();
  }

  function showError(text) {
    $("chat-error").textContent = text || "";
  }

  function showLogin(text) {
    $("chat").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = text || "";
  }

  // ------------------------------------------------------------------ user actions

  async function start(register) {
    const nick = $("nick").value.trim();
    const password = $("password").value;
    $("login-error").textContent = "";
    state.token = null;
    if (register && !password) {
      $("login-error").textContent = "an account needs a password";
      return;
    }
    if (password) {
      try {
        const resp = await fetch(register ? "accounts" : "login", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ name: nick, password }),
        });
        const body = await resp.json();
        if (!resp.ok) {
          $("login-error").textContent = body.detail || body.error;
          return;
        }
        state.token = body.token;
      } catch (err) {
        $("login-error").textContent = String(err);
        return;
      }
    }
    $("password").value = "";
    state.nick = nick;
    state.wanted = true;
    state.welcomed = false;
    connect();
  }

  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    start(false);
  });
  $("register").addEventListener("click", () => start(true));

  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("join-room").value.trim().replace(/^#/, "");
    if (!name) return;
    $("join-room").value = "";
    join(name, true);
  });

  $("send-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const r = state.rooms.get(state.current);
    const input = $("text");
    const text = input.value;
    if (!r || !text) return;
    const msg = r.dm ? { type: "dm", to: r.name, text } : { type: "send", room: r.name, text };
    request(msg, (reply) => {
      if (reply.type === "error") showError(reply.detail || reply.code);
      else showError("");
    });
    input.value = "";
  });

  $("leave").addEventListener("click", () => {
    const r = state.rooms.get(state.current);
    if (!r) return;
    const done = () => {
      state.rooms.delete(r.key);
      const next = [...state.rooms.values()].find((x) => x.joined);
      select(next ? next.key : null);
      refreshRooms();
    };
    if (r.dm) done();
    else request({ type: "part", room: r.name }, (reply) => {
      if (reply.type === "error") showError(reply.detail || reply.code);
      else done();
    });
  });

  $("older").addEventListener("click", () => {
    const r = state.rooms.get(state.current);
    if (!r || r.firstSeq <= 1) return;
    const msg = r.dm
      ? { type: "history", peer: r.name, before: r.firstSeq, limit: 50 }
      : { type: "history", room: r.name, before: r.firstSeq, limit: 50 };
    request(msg, (reply) => {
      if (reply.type === "error") {
        showError(reply.detail || reply.code);
        return;
      }
      for (const m of reply.messages) addMessage(m);
      renderHead();
    });
  });
})();
