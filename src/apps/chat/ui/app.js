// switchboard chat: the browser client of the chat protocol (docs/protocol.md).
//
// Rules this file keeps:
// - User text only ever reaches the page through textContent and attribute values, never as
//   HTML: a message like <img src=x onerror=...> shows as those characters.
// - The connection comes back by itself (with growing pauses), and each room is joined again
//   with `since` = the last id seen, so nothing sent meanwhile is missed.
// - Messages typed while offline wait and are sent after the rooms are joined again; one the
//   server already stored (its clientId comes back in the recovered history) is not re-sent.
'use strict';

(() => {
  const stage = document.querySelector('meta[name="switchboard-stage"]').content;
  const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/${stage}`;
  const LOBBY = 'lobby';
  const ROOM_RULE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
  const PALETTE = ['👏', '❤️', '😂', '👍', '🎉', '😮'];
  const PAGE = 50;

  const saved = {
    get(key, fallback) {
      try {
        const v = localStorage.getItem(`switchboard.${key}`);
        return v === null ? fallback : JSON.parse(v);
      } catch {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(`switchboard.${key}`, JSON.stringify(value));
      } catch {
        // Private mode or storage full: the chat works without it.
      }
    },
  };

  const state = {
    ws: null,
    online: false,
    attempt: 0,
    reconnectTimer: null,
    me: { connectionId: null, name: saved.get('name', null) },
    // room name -> { name, joined, messages: Map(id -> message), lastId, hasMore,
    //                members: Map(connectionId -> name), unread, loadingOlder }
    rooms: new Map(),
    current: saved.get('current', LOBBY),
    known: [],
    // clientId -> { room, text, failed }
    pending: new Map(),
    session: Math.random().toString(36).slice(2, 10),
    sequence: 0,
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    title: $('room-title'),
    status: $('status'),
    myName: $('my-name'),
    nickButton: $('nick-button'),
    nickForm: $('nick-form'),
    nickInput: $('nick-input'),
    nickCancel: $('nick-cancel'),
    rooms: $('rooms'),
    roomsPanel: $('rooms-panel'),
    membersPanel: $('members-panel'),
    joinForm: $('join-form'),
    joinInput: $('join-input'),
    messages: $('messages'),
    list: $('message-list'),
    older: $('older'),
    notice: $('notice'),
    composer: $('composer'),
    text: $('text'),
    members: $('members'),
    memberCount: $('member-count'),
    leave: $('leave'),
  };

  // Builds an element; `text` goes in as text, never as HTML.
  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    }
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function room(name) {
    let r = state.rooms.get(name);
    if (!r) {
      r = {
        name,
        joined: false,
        messages: new Map(),
        lastId: 0,
        hasMore: false,
        members: new Map(),
        unread: 0,
        loadingOlder: false,
      };
      state.rooms.set(name, r);
    }
    return r;
  }

  function joinedRooms() {
    return [...state.rooms.values()].filter((r) => r.joined).map((r) => r.name);
  }

  function remember() {
    saved.set('rooms', joinedRooms());
    saved.set('current', state.current);
  }

  // ---- the connection --------------------------------------------------------------------

  function send(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.status.textContent = text;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    setStatus(state.attempt ? 'reconnecting' : 'connecting', state.attempt ? 'reconnecting…' : 'connecting…');
    let ws;
    try {
      ws = new WebSocket(wsUrl);
    } catch {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    ws.onopen = () => {
      state.online = true;
      state.attempt = 0;
      setStatus('online', 'online');
      const wanted = new Set([LOBBY, ...saved.get('rooms', []), ...joinedRooms(), state.current]);
      for (const name of wanted) if (ROOM_RULE.test(name)) join(name);
      send({ action: 'rooms' });
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // raw text for plain clients, before the first join is answered
      }
      if (frame && typeof frame.type === 'string' && handlers[frame.type]) handlers[frame.type](frame);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.online = false;
      for (const r of state.rooms.values()) r.members.clear();
      renderMembers();
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (state.reconnectTimer) return;
    const base = Math.min(8000, 500 * 2 ** state.attempt);
    const delay = Math.round(base * (0.75 + Math.random() / 2));
    state.attempt += 1;
    setStatus('reconnecting', `offline, retrying in ${Math.ceil(delay / 1000)} s…`);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  window.addEventListener('online', () => {
    if (!state.online) connect();
  });

  function join(name) {
    const r = room(name);
    const frame = { action: 'join', room: name };
    if (state.me.name) frame.name = state.me.name;
    if (r.lastId > 0) frame.since = r.lastId;
    send(frame);
  }

  // ---- frames from the server ------------------------------------------------------------

  const handlers = {
    joined(f) {
      const r = room(f.room);
      const recovering = r.lastId > 0 && !f.truncated;
      if (!recovering) {
        r.messages.clear();
        r.hasMore = f.messages.length > 0 ? f.messages[0].id > 1 : f.lastId > 0;
      }
      r.joined = true;
      r.lastId = Math.max(f.lastId, recovering ? r.lastId : 0);
      r.members = new Map(f.members.map((m) => [m.connectionId, m.name]));
      state.me.connectionId = f.you.connectionId;
      state.me.name = f.you.name;
      ui.myName.textContent = f.you.name;
      for (const m of f.messages) addMessage(r, m);
      // Resend what this room still owes, unless the server already has it.
      for (const [clientId, p] of state.pending) {
        if (p.room !== r.name || p.failed) continue;
        send({ action: 'send', room: p.room, text: p.text, clientId });
      }
      remember();
      renderRooms();
      if (f.room === state.current) {
        renderRoom();
        scrollToBottom();
      }
      send({ action: 'rooms' });
    },

    message(m) {
      const r = room(m.room);
      const atBottom = isAtBottom();
      addMessage(r, m);
      r.lastId = Math.max(r.lastId, m.id);
      if (m.room === state.current) {
        appendOrRender(r, m);
        if (atBottom || m.from.connectionId === state.me.connectionId) scrollToBottom();
      } else {
        r.unread += 1;
        renderRooms();
      }
    },

    history(f) {
      const r = room(f.room);
      r.loadingOlder = false;
      r.hasMore = f.hasMore;
      for (const m of f.messages) addMessage(r, m);
      if (f.room === state.current) {
        const fromBottom = ui.messages.scrollHeight - ui.messages.scrollTop;
        renderRoom();
        ui.messages.scrollTop = ui.messages.scrollHeight - fromBottom;
      }
    },

    presence(f) {
      const r = room(f.room);
      if (f.connectionIds) {
        // Several left at once (their node died).
        for (const id of f.connectionIds) r.members.delete(id);
        if (f.room === state.current) renderMembers();
        renderRooms();
        return;
      }
      if (f.event === 'leave') r.members.delete(f.member.connectionId);
      else r.members.set(f.member.connectionId, f.member.name);
      if (f.member.connectionId === state.me.connectionId) {
        state.me.name = f.member.name;
        ui.myName.textContent = f.member.name;
      }
      if (f.room === state.current) renderMembers();
      renderRooms();
    },

    members(f) {
      const r = room(f.room);
      r.members = new Map(f.members.map((m) => [m.connectionId, m.name]));
      if (f.room === state.current) renderMembers();
    },

    reaction(f) {
      const r = room(f.room);
      const m = r.messages.get(f.id);
      if (!m) return;
      m.reactions = { ...m.reactions, [f.emoji]: f.count };
      if (f.room === state.current) {
        const li = ui.list.querySelector(`li[data-id="${f.id}"]`);
        if (li) li.replaceChild(reactionBar(r, m), li.querySelector('.reactions'));
      }
    },

    left(f) {
      const r = room(f.room);
      r.joined = false;
      r.members.clear();
      if (state.current === f.room) state.current = LOBBY;
      remember();
      renderAll();
      send({ action: 'rooms' });
    },

    nick(f) {
      state.me.name = f.you.name;
      saved.set('name', f.you.name);
      ui.myName.textContent = f.you.name;
    },

    rooms(f) {
      state.known = f.rooms;
      renderRooms();
    },

    error(f) {
      // A refused `send` names its message.
      const p = f.action === 'send' && state.pending.get(f.clientId);
      if (p) {
        p.failed = f.message;
        const li = ui.list.querySelector(`li[data-client-id="${CSS.escape(f.clientId)}"]`);
        if (li) li.replaceWith(pendingItem(f.clientId, p));
      }
      showNotice(`${f.code}: ${f.message}`);
    },
  };

  function addMessage(r, m) {
    m.reactions = m.reactions || {};
    r.messages.set(m.id, m);
    r.lastId = Math.max(r.lastId, m.id);
    // Our own message came back: the acknowledgement, or found in the history recovered
    // after a reconnect (sent by this page's previous connection).
    if (m.clientId && state.pending.has(m.clientId)) {
      state.pending.delete(m.clientId);
      const li = ui.list.querySelector(`li[data-client-id="${CSS.escape(m.clientId)}"]`);
      if (li) li.remove();
    }
  }

  // ---- rendering -------------------------------------------------------------------------

  function formatTime(ts) {
    const d = new Date(ts);
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function messageItem(r, m) {
    const li = el('li', { class: 'msg', 'data-id': m.id });
    if (m.from.connectionId === state.me.connectionId) li.classList.add('mine');
    const meta = el('div', { class: 'meta' });
    meta.append(el('span', { class: 'author' }, m.from.name), el('time', { datetime: m.ts, title: m.ts }, formatTime(m.ts)));
    li.append(meta, el('div', { class: 'text' }, m.text), reactionBar(r, m));
    return li;
  }

  function pendingItem(clientId, p) {
    const li = el('li', { class: 'msg mine pending', 'data-client-id': clientId });
    const meta = el('div', { class: 'meta' });
    meta.append(
      el('span', { class: 'author' }, state.me.name || 'you'),
      el('span', { class: 'state' }, p.failed ? `not sent (${p.failed}): click to retry` : 'sending…'),
    );
    li.append(meta, el('div', { class: 'text' }, p.text));
    if (p.failed) {
      li.classList.add('failed');
      li.addEventListener('click', () => {
        p.failed = null;
        li.replaceWith(pendingItem(clientId, p));
        send({ action: 'send', room: p.room, text: p.text, clientId });
      });
    }
    return li;
  }

  function reactionBar(r, m) {
    const bar = el('div', { class: 'reactions' });
    for (const [emoji, count] of Object.entries(m.reactions || {})) {
      const b = el('button', { type: 'button', 'data-emoji': emoji, title: `${emoji} ${count}` });
      b.append(document.createTextNode(`${emoji} `), el('span', { class: 'count' }, count));
      b.addEventListener('click', () => react(r, m, emoji));
      bar.append(b);
    }
    const add = el('button', { type: 'button', class: 'add', title: 'React', 'aria-label': 'Add a reaction' }, '+');
    add.addEventListener('click', () => {
      const palette = el('span', { class: 'palette' });
      for (const emoji of PALETTE) {
        const b = el('button', { type: 'button', 'data-emoji': emoji }, emoji);
        b.addEventListener('click', () => {
          react(r, m, emoji);
          palette.remove();
        });
        palette.append(b);
      }
      add.replaceWith(palette);
    });
    bar.append(add);
    return bar;
  }

  function react(r, m, emoji) {
    if (!send({ action: 'react', room: r.name, id: m.id, emoji })) showNotice('offline: the reaction was not sent');
  }

  function sortedMessages(r) {
    return [...r.messages.values()].sort((a, b) => a.id - b.id);
  }

  function renderRoom() {
    const r = room(state.current);
    ui.title.textContent = `#${r.name}`;
    ui.text.placeholder = `Message #${r.name}`;
    const items = sortedMessages(r).map((m) => messageItem(r, m));
    for (const [clientId, p] of state.pending) if (p.room === r.name) items.push(pendingItem(clientId, p));
    ui.list.replaceChildren(...items);
    ui.older.hidden = !r.hasMore;
    ui.leave.hidden = r.name === LOBBY || !r.joined;
    renderMembers();
  }

  function appendOrRender(r, m) {
    const shown = ui.list.querySelectorAll('li[data-id]');
    const lastId = shown.length ? Number(shown[shown.length - 1].dataset.id) : 0;
    const firstPending = ui.list.querySelector('li.pending');
    if (m.id > lastId && !ui.list.querySelector(`li[data-id="${m.id}"]`)) {
      const item = messageItem(r, m);
      if (firstPending) ui.list.insertBefore(item, firstPending);
      else ui.list.append(item);
    } else {
      renderRoom();
    }
  }

  function renderMembers() {
    const r = room(state.current);
    const members = [...r.members.entries()].sort((a, b) => a[1].localeCompare(b[1]));
    ui.members.replaceChildren(
      ...members.map(([id, name]) => el('li', { class: id === state.me.connectionId ? 'me' : null, 'data-connection-id': id }, name)),
    );
    ui.memberCount.textContent = String(members.length);
  }

  function renderRooms() {
    const names = new Set([LOBBY, ...joinedRooms(), ...state.known.map((k) => k.room)]);
    const counts = new Map(state.known.map((k) => [k.room, k.members]));
    const items = [...names]
      .sort((a, b) => (a === LOBBY ? -1 : b === LOBBY ? 1 : a.localeCompare(b)))
      .map((name) => {
        const r = state.rooms.get(name);
        const li = el('li');
        const b = el('button', { type: 'button', 'data-room': name, 'aria-current': name === state.current ? 'true' : 'false' });
        b.append(el('span', { class: 'name' }, `#${name}`));
        if (r && r.unread > 0) b.append(el('span', { class: 'unread' }, r.unread));
        else if (r && r.joined) b.append(el('span', { class: 'count' }, r.members.size || ''));
        else if (counts.get(name)) b.append(el('span', { class: 'count' }, counts.get(name)));
        b.addEventListener('click', () => openRoom(name));
        li.append(b);
        return li;
      });
    ui.rooms.replaceChildren(...items);
  }

  function renderAll() {
    renderRooms();
    renderRoom();
  }

  function isAtBottom() {
    return ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
  }

  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  let noticeTimer = null;
  function showNotice(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      ui.notice.hidden = true;
    }, 6000);
  }

  // ---- what people do --------------------------------------------------------------------

  function openRoom(name) {
    state.current = name;
    const r = room(name);
    r.unread = 0;
    if (!r.joined) join(name);
    remember();
    renderAll();
    scrollToBottom();
    ui.roomsPanel.classList.remove('open');
  }

  ui.joinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = ui.joinInput.value.trim().toLowerCase();
    if (!ROOM_RULE.test(name)) {
      showNotice('room names are 1 to 32 lower-case letters, digits, - or _, starting with a letter or digit');
      return;
    }
    ui.joinInput.value = '';
    openRoom(name);
  });

  ui.composer.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.text.value;
    if (!text.trim()) return;
    const clientId = `${state.session}-${++state.sequence}`;
    const p = { room: state.current, text, failed: null };
    state.pending.set(clientId, p);
    ui.list.append(pendingItem(clientId, p));
    scrollToBottom();
    ui.text.value = '';
    // Offline, it waits: it is sent when the room is joined again.
    if (room(p.room).joined) send({ action: 'send', room: p.room, text, clientId });
  });

  ui.text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      ui.composer.requestSubmit();
    }
  });

  ui.older.addEventListener('click', () => loadOlder());
  function loadOlder() {
    const r = room(state.current);
    if (!r.hasMore || r.loadingOlder) return;
    const oldest = sortedMessages(r)[0];
    const frame = { action: 'history', room: r.name, limit: PAGE };
    if (oldest) frame.before = oldest.id;
    if (send(frame)) r.loadingOlder = true;
  }
  // Scrolling up to the top loads older messages.
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadOlder();
  }, { root: ui.messages }).observe(ui.older);

  ui.leave.addEventListener('click', () => send({ action: 'leave', room: state.current }));

  ui.nickButton.addEventListener('click', () => {
    ui.nickForm.hidden = false;
    ui.nickInput.value = state.me.name || '';
    ui.nickInput.focus();
    ui.nickInput.select();
  });
  ui.nickCancel.addEventListener('click', () => {
    ui.nickForm.hidden = true;
  });
  ui.nickForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = ui.nickInput.value.trim();
    if (!name) return;
    ui.nickForm.hidden = true;
    saved.set('name', name);
    state.me.name = name;
    ui.myName.textContent = name;
    send({ action: 'nick', name });
  });

  $('toggle-rooms').addEventListener('click', () => {
    ui.membersPanel.classList.remove('open');
    if (ui.roomsPanel.classList.toggle('open')) send({ action: 'rooms' });
  });
  $('toggle-members').addEventListener('click', () => {
    ui.roomsPanel.classList.remove('open');
    ui.membersPanel.classList.toggle('open');
  });

  // The room list (other people's rooms, member counts) is refreshed now and then, and when
  // the page comes back into view.
  setInterval(() => {
    if (state.online) send({ action: 'rooms' });
  }, 20000);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) send({ action: 'rooms' });
  });

  ui.myName.textContent = state.me.name || '…';
  renderAll();
  connect();
})();
