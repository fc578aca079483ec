/* The upload page: sign-in, an Uppy Dashboard uploading over tus to /files/, and the gallery,
 * kept current by the server's event stream (/api/events) instead of polling.
 *
 * The token lives in localStorage; tus upload URLs are kept by tus-js-client (also in
 * localStorage), so adding the same file again after a reload resumes the upload.
 * Optional query parameters: ?chunkSize=BYTES sends uploads in PATCHes of that size
 * (for proxies that limit request bodies).
 */
(function () {
  'use strict';

  const TOKEN_KEY = 'mediaserver.token';
  const USER_KEY = 'mediaserver.user';
  const NOTICE_KEY = 'mediaserver.notice';
  const PAGE_SIZE = 24;
  const REFRESH_DELAY_MS = 300; // events that come together cause one refresh
  const REFRESH_GAP_MS = 2000; // and refreshes are at least this far apart
  const STALE_TRANSFER_MS = 10 * 60 * 1000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // outline icons (24x24) for items without a thumbnail: [tag, attributes] per shape
  const ICONS = {
    images: [['rect', { x: 3, y: 4, width: 18, height: 16, rx: 2 }], ['circle', { cx: 8.5, cy: 9.5, r: 1.5 }],
      ['path', { d: 'M21 16l-5-5-9 9' }]],
    videos: [['rect', { x: 3, y: 5, width: 18, height: 14, rx: 2 }], ['path', { d: 'M10 9l5 3-5 3z' }]],
    files: [['path', { d: 'M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8z' }], ['path', { d: 'M14 3v5h5' }]],
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    token: null, user: null, page: 1, pages: 1, total: 0, loading: null, again: false, refreshTimer: null,
    lastRefresh: 0, tiles: new Map(), transfers: new Map(), events: null, eventsTimer: null, eventFailures: 0,
    lastEventId: null, deleting: null, playing: null,
  };

  // -- the API ---------------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options = {}) {
    const headers = { Accept: 'application/json', ...(options.headers || {}) };
    if (state.token && !options.anonymous) headers.Authorization = 'Bearer ' + state.token;
    let body = options.body;
    if (body !== undefined && typeof body !== 'string') {
      body = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    let response;
    try {
      response = await fetch(path, { method: options.method || 'GET', headers, body, cache: 'no-store' });
    } catch (err) {
      throw new ApiFailure(0, 'network_error', 'The server cannot be reached. Check the connection and try again.');
    }
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (err) { data = null; }
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      if (response.status === 401 && !options.anonymous) signedOut('Your session has ended. Please sign in again.');
      throw new ApiFailure(response.status, error.code || 'http_' + response.status,
        error.message || 'The request failed (' + response.status + ').');
    }
    return data;
  }

  // -- signing in ------------------------------------------------------------------------

  function show(section) {
    $('loading').hidden = true;
    $('auth').hidden = section !== 'auth';
    $('app').hidden = section !== 'app';
    $('account').hidden = section !== 'app';
  }

  function displayName(user) {
    return (user && (user.username || user.email)) || 'you';
  }

  function signedIn(token, user) {
    state.token = token;
    state.user = user || null;
    localStorage.setItem(TOKEN_KEY, token);
    if (user) localStorage.setItem(USER_KEY, JSON.stringify(user));
    $('account-name').textContent = displayName(user);
    $('auth-error').hidden = true;
    show('app');
    startUploader();
    state.page = 1;
    refreshGallery();
    connectEvents();
  }

  function signedOut(message) {
    state.token = null;
    state.user = null;
    disconnectEvents();
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
    if (window.uppy) {
      // Start over with a fresh page: uploads in progress stop, no one else's token stays in
      // memory, and their tus URLs stay stored, so adding the same file again resumes them.
      if (message) sessionStorage.setItem(NOTICE_KEY, message);
      window.location.reload();
      return;
    }
    clearTimeout(state.refreshTimer);
    state.refreshTimer = null;
    state.tiles = new Map();
    $('gallery').replaceChildren();
    show('auth');
    if (message) showError('auth-error', message);
    $('login').focus();
  }

  function showError(id, message) {
    const element = $(id);
    element.textContent = message;
    element.hidden = !message;
  }

  function credentials() {
    const login = $('login').value.trim();
    const password = $('password').value;
    if (!login || !password) {
      showError('auth-error', 'Enter a username (or email) and a password.');
      return null;
    }
    const isEmail = login.includes('@');
    return { login, password, isEmail };
  }

  async function submitAuth(kind) {
    const given = credentials();
    if (!given) return;
    const buttons = [$('sign-in'), $('register')];
    buttons.forEach((b) => { b.disabled = true; });
    showError('auth-error', '');
    try {
      const body = { password: given.password };
      body[given.isEmail ? 'email' : 'username'] = given.login;
      const path = kind === 'register' ? '/api/auth/register' : '/api/auth/login';
      const answer = await api(path, { method: 'POST', body, anonymous: true });
      $('password').value = '';
      signedIn(answer.token, answer.user);
    } catch (err) {
      let message = err.message;
      if (err.status === 401) message = 'Wrong username or password.';
      if (err.status === 409) message = 'That name is taken. Sign in instead, or choose another.';
      if (err.status === 429) message = 'Too many attempts. Wait a while, then try again.';
      if (err.status === 400 && kind === 'register') message = 'Account not created: ' + err.message;
      showError('auth-error', message);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  async function restoreSession() {
    const token = localStorage.getItem(TOKEN_KEY);
    if (!token) {
      show('auth');
      return;
    }
    state.token = token;
    try {
      const answer = await api('/api/auth/verify');
      signedIn(token, answer.user);
    } catch (err) {
      if (err.status === 401) return; // signedOut() already showed the form
      // the gateway is unreachable: keep the token and show what we have
      let user = null;
      try { user = JSON.parse(localStorage.getItem(USER_KEY) || 'null'); } catch (e) { user = null; }
      signedIn(token, user);
    }
  }

  // -- uploading -------------------------------------------------------------------------

  function uploadOptions() {
    const params = new URLSearchParams(window.location.search);
    const chunkSize = parseInt(params.get('chunkSize') || '', 10);
    const options = {
      endpoint: '/files/',
      headers: () => ({ Authorization: 'Bearer ' + (state.token || '') }),
      // keep each file's upload URL (in localStorage) until it is finished, so that the
      // same file added again after a reload continues instead of starting over
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000, 30000],
      allowedMetaFields: ['name', 'type'],
      limit: 3,
    };
    if (chunkSize > 0) options.chunkSize = chunkSize;
    return options;
  }

  function startUploader() {
    if (window.uppy) return;
    if (!window.Uppy || !window.Uppy.Uppy) {
      // its own element: the gallery's refresh clears gallery-error, this stays until a reload
      showError('uploader-error', 'The upload widget could not be loaded, so uploading is not possible on this page. ' +
        'Reload the page to try again; if this persists, the server is missing its Uppy bundle.');
      return;
    }
    showError('uploader-error', '');
    const { Uppy, Dashboard, Tus } = window.Uppy;
    const uppy = new Uppy({ id: 'mediaserver', autoProceed: false });
    uppy.use(Dashboard, {
      inline: true,
      target: '#uploader',
      width: '100%',
      height: 360,
      showProgressDetails: true,
      proudlyDisplayPoweredByUppy: false,
      note: 'Images, videos and other files',
    });
    uppy.use(Tus, uploadOptions());
    fixDashboardRoles();
    // the event stream announces each new item; one refresh after a batch covers a stream that is down
    uppy.on('complete', () => scheduleRefresh());
    window.uppy = uppy;
    announceMaxSize(uppy);
  }

  // The Dashboard lists a single file in a plain <div> whose children still say role="listitem"
  // (axe-core: aria-required-parent); give that container the list role it lacks.
  function fixDashboardRoles() {
    const root = $('uploader');
    const fix = () => {
      for (const list of root.querySelectorAll('.uppy-Dashboard-files:not([role])')) list.setAttribute('role', 'list');
    };
    new MutationObserver(fix).observe(root, { childList: true, subtree: true });
    fix();
  }

  async function announceMaxSize(uppy) {
    try {
      const response = await fetch('/files/', { method: 'OPTIONS', headers: { 'Tus-Resumable': '1.0.0' } });
      const max = parseInt(response.headers.get('Tus-Max-Size') || '', 10);
      if (max > 0) uppy.setOptions({ restrictions: { maxFileSize: max } });
    } catch (err) {
      // the server enforces the limit anyway
    }
  }

  // -- the gallery -----------------------------------------------------------------------
  //
  // Tiles are kept by item id, each with a signature of what it shows (status, reason,
  // name, size, whether it has a thumbnail). A refresh of the list builds a tile anew only
  // when its signature changed: an unchanged tile keeps its <img> element and the src it
  // loaded, although the list answers freshly signed URLs on each refresh.

  // sizes are computed in 1024s, so they are labelled with the binary (IEC) units
  function formatSize(bytes) {
    if (bytes === null || bytes === undefined) return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(value < 10 ? 1 : 0)) + ' ' + units[unit];
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function icon(type) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('class', 'glyph');
    svg.setAttribute('aria-hidden', 'true');
    for (const [tag, attributes] of ICONS[type] || ICONS.files) {
      const shape = document.createElementNS(SVG_NS, tag);
      for (const [name, value] of Object.entries(attributes)) shape.setAttribute(name, String(value));
      svg.append(shape);
    }
    return svg;
  }

  function placeholder(type) {
    const box = element('div', 'media-placeholder');
    box.append(icon(type));
    box.append(element('span', 'type', (type || 'file').replace(/s$/, '')));
    return box;
  }

  function itemName(item) {
    return item.filename || item.id;
  }

  function signature(item) {
    return JSON.stringify([item.status, item.reason, item.filename, item.size, item.type, Boolean(item.thumbnailUrl),
      Boolean(item.url)]);
  }

  function renderItem(item) {
    const li = element('li', 'media-item');
    li.dataset.id = item.id;
    li.dataset.status = item.status;
    const name = itemName(item);
    const thumb = element('div', 'media-thumb');
    if (item.thumbnailUrl) {
      const img = element('img');
      img.src = item.thumbnailUrl;
      img.alt = item.type === 'videos' ? 'Frame of ' + name : name;
      img.loading = 'lazy';
      img.addEventListener('error', () => img.replaceWith(placeholder(item.type)), { once: true });
      thumb.append(img);
    } else {
      thumb.append(placeholder(item.type));
    }
    li.append(thumb);

    const info = element('div', 'media-info');
    let title;
    if (item.url) {
      title = element('a', 'media-name', name);
      title.href = item.url;
      title.target = '_blank';
      title.rel = 'noopener noreferrer';
    } else {
      title = element('span', 'media-name', name);
    }
    title.title = name;
    info.append(title);
    const meta = element('div', 'media-meta');
    meta.append(element('span', 'size', formatSize(item.size)));
    meta.append(element('span', 'status status-' + item.status, item.status));
    info.append(meta);
    if (item.status === 'failed') {
      info.append(element('p', 'media-reason', item.reason || 'Processing failed.'));
    }
    const actions = element('div', 'media-actions');
    // the page's CSP lets media play from the gateway and from its store's signed URLs (S3)
    if (item.type === 'videos' && item.status === 'ready' && item.url) {
      const play = element('button', 'secondary play', 'Play');
      play.type = 'button';
      play.setAttribute('aria-label', 'Play ' + name);
      play.addEventListener('click', () => openPlayer(item, play));
      actions.append(play);
    }
    const remove = element('button', 'secondary delete', 'Delete');
    remove.type = 'button';
    remove.setAttribute('aria-label', 'Delete ' + name);
    remove.addEventListener('click', () => confirmDelete(item, remove));
    actions.append(remove);
    info.append(actions);
    li.append(info);
    return li;
  }

  /** Shows `items` (one page), reusing the tiles whose content did not change. */
  function showItems(items) {
    const tiles = new Map();
    const nodes = items.map((item) => {
      const sig = signature(item);
      const known = state.tiles.get(item.id);
      const tile = known && known.signature === sig ? known : { li: renderItem(item), signature: sig };
      tile.item = item;
      tiles.set(item.id, tile);
      return tile.li;
    });
    state.tiles = tiles;
    const gallery = $('gallery');
    // move or insert in order; an element kept in place is never detached (its image stays loaded)
    nodes.forEach((node, index) => {
      if (gallery.children[index] !== node) gallery.insertBefore(node, gallery.children[index] || null);
    });
    while (gallery.children.length > nodes.length) gallery.lastElementChild.remove();
  }

  function showCount() {
    $('gallery-count').textContent = state.total ? state.total + (state.total === 1 ? ' item' : ' items') : '';
    $('gallery-empty').hidden = state.tiles.size > 0;
  }

  async function refreshGallery() {
    if (!state.token) return;
    if (state.loading) {
      state.again = true;
      return state.loading;
    }
    state.lastRefresh = Date.now();
    state.loading = (async () => {
      try {
        const data = await api('/api/media?page=' + state.page + '&limit=' + PAGE_SIZE);
        if (!state.token) return;
        showError('gallery-error', '');
        const items = data.items || [];
        state.pages = Math.max(1, data.pages || 1);
        if (state.page > state.pages) {
          state.page = state.pages;
          state.again = true;
          return;
        }
        state.total = data.total || 0;
        showItems(items);
        showCount();
        $('prev-page').hidden = state.page <= 1;
        $('next-page').hidden = state.page >= state.pages;
        $('page-info').textContent = state.pages > 1 ? 'Page ' + state.page + ' of ' + state.pages : '';
      } catch (err) {
        if (state.token) showError('gallery-error', err.message);
      }
    })();
    try {
      await state.loading;
    } finally {
      state.loading = null;
    }
    if (state.again) {
      state.again = false;
      scheduleRefresh();
    }
  }

  // many events in a row (a batch of uploads) cause one refresh per REFRESH_GAP_MS at most
  function scheduleRefresh() {
    if (state.refreshTimer) return;
    const wait = Math.max(REFRESH_DELAY_MS, (state.lastRefresh || 0) + REFRESH_GAP_MS - Date.now());
    state.refreshTimer = setTimeout(() => {
      state.refreshTimer = null;
      refreshGallery();
    }, wait);
  }

  function announce(message) {
    $('gallery-status').textContent = message;
  }

  // -- deleting --------------------------------------------------------------------------

  function confirmDelete(item, trigger) {
    const dialog = $('confirm-delete');
    if (dialog.open) return;
    state.deleting = { item, trigger };
    $('confirm-delete-text').textContent = '“' + itemName(item) + '” (' + formatSize(item.size) +
      ') will be deleted, with its thumbnail. This cannot be undone.';
    showError('confirm-delete-error', '');
    $('confirm-delete-yes').disabled = false;
    dialog.showModal();
    $('confirm-delete-no').focus();
  }

  async function deleteConfirmed() {
    const job = state.deleting;
    if (!job) return;
    const button = $('confirm-delete-yes');
    button.disabled = true;
    try {
      await api('/api/media/' + encodeURIComponent(job.item.id), { method: 'DELETE' });
    } catch (err) {
      button.disabled = false;
      if (err.status !== 404) {
        showError('confirm-delete-error', 'Not deleted: ' + err.message);
        return;
      }
    }
    state.deleting = null;
    $('confirm-delete').close('deleted');
    removeTile(job.item.id, true);
    announce('Deleted ' + itemName(job.item) + '.');
    scheduleRefresh(); // the page fills up from the next one
  }

  function removeTile(id, moveFocus) {
    const tile = state.tiles.get(id);
    if (!tile) return;
    const next = tile.li.nextElementSibling || tile.li.previousElementSibling;
    tile.li.remove();
    state.tiles.delete(id);
    state.total = Math.max(0, (state.total || 1) - 1);
    showCount();
    if (moveFocus) {
      const target = next && next.querySelector('.delete');
      (target || $('gallery-title')).focus();
    }
  }

  function deleteDialogClosed() {
    const job = state.deleting;
    state.deleting = null;
    if (job && job.trigger.isConnected) job.trigger.focus();
  }

  // -- playing videos --------------------------------------------------------------------

  async function openPlayer(item, trigger) {
    const dialog = $('player');
    const video = $('player-video');
    if (dialog.open) return;
    state.playing = { trigger };
    $('player-title').textContent = itemName(item);
    showError('player-error', '');
    dialog.showModal();
    $('player-close').focus();
    try {
      // a freshly signed URL: the one listed with the tile may have expired since
      const fresh = await api('/api/media/' + encodeURIComponent(item.id));
      if (!fresh.url) throw new Error('This video has no URL to play.');
      if (!dialog.open) return;
      video.src = fresh.url; // the browser reads it with Range requests as it plays
      await video.play().catch(() => {}); // paused if autoplay is refused: the controls play it
    } catch (err) {
      showError('player-error', 'The video cannot be played: ' + err.message);
    }
  }

  function playerClosed() {
    const video = $('player-video');
    video.pause();
    video.removeAttribute('src');
    video.load();
    const job = state.playing;
    state.playing = null;
    if (job && job.trigger.isConnected) job.trigger.focus();
  }

  // -- live updates (/api/events) ---------------------------------------------------------
  //
  // The server sends the state of this user's uploads and media whenever it changes,
  // through any instance. The gallery changes only where an item changed.

  function setLive(on) {
    const live = $('live');
    live.dataset.state = on ? 'on' : 'off';
    live.textContent = on ? 'Live' : 'Live updates off';
  }

  function connectEvents() {
    disconnectEvents();
    if (!state.token || typeof window.EventSource !== 'function') return;
    let url = '/api/events?access_token=' + encodeURIComponent(state.token);
    if (state.lastEventId) url += '&lastEventId=' + encodeURIComponent(state.lastEventId);
    const source = new EventSource(url);
    state.events = source;
    const track = (handler) => (event) => {
      if (event.lastEventId) state.lastEventId = event.lastEventId;
      let data = null;
      try { data = JSON.parse(event.data); } catch (err) { return; }
      handler(data);
    };
    source.addEventListener('open', () => {
      state.eventFailures = 0;
      setLive(true);
    });
    source.addEventListener('media.status', track(mediaChanged));
    source.addEventListener('media.deleted', track((data) => {
      if (state.tiles.has(data.id)) {
        removeTile(data.id, false);
        scheduleRefresh();
      }
    }));
    source.addEventListener('upload.progress', track(uploadProgress));
    source.addEventListener('upload.completed', track((data) => forgetTransfer(data.id)));
    source.addEventListener('auth.ended', track((data) => {
      disconnectEvents();
      signedOut(data.code === 'token_revoked' ? 'You were signed out. Please sign in again.'
        : 'Your session has ended. Please sign in again.');
    }));
    source.addEventListener('error', () => {
      setLive(false);
      if (source.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
      // refused (401, 429, 503): find out whether the token still stands, then try again later
      disconnectEvents();
      state.eventFailures = (state.eventFailures || 0) + 1;
      const wait = Math.min(60000, 2000 * 2 ** Math.min(state.eventFailures, 5));
      state.eventsTimer = setTimeout(async () => {
        try {
          await api('/api/auth/verify');
        } catch (err) {
          if (err.status === 401) return; // signed out already
        }
        if (state.token) {
          connectEvents();
          scheduleRefresh(); // whatever changed while disconnected
        }
      }, wait);
    });
  }

  function disconnectEvents() {
    clearTimeout(state.eventsTimer);
    if (state.events) state.events.close();
    state.events = null;
    setLive(false);
  }

  function mediaChanged(data) {
    const tile = state.tiles.get(data.id);
    if (!tile) {
      if (state.page === 1) scheduleRefresh(); // a new item: newest first, on page 1
      return;
    }
    const seen = tile.item;
    if (seen.status === data.status && seen.reason === data.reason && seen.filename === data.filename) return;
    scheduleRefresh(); // its new state, with its thumbnail's URL, comes with the list
  }

  // uploads of this user that this page is not sending itself (another tab, device or client)
  function ownUpload(id) {
    if (!window.uppy) return false;
    return window.uppy.getFiles().some((file) => {
      const url = (file.tus && file.tus.uploadUrl) || file.uploadURL || '';
      return url.replace(/\/+$/, '').endsWith('/' + id);
    });
  }

  function uploadProgress(data) {
    if (data.length && data.offset >= data.length) return forgetTransfer(data.id);
    if (ownUpload(data.id)) return; // the Dashboard shows it
    let row = state.transfers.get(data.id);
    if (!row) {
      const li = element('li', 'transfer');
      const label = element('span', 'transfer-name', data.filename || 'Upload ' + data.id.slice(0, 8));
      label.id = 'transfer-' + data.id;
      const bar = element('progress');
      bar.setAttribute('aria-labelledby', label.id);
      const text = element('span', 'transfer-text small');
      li.append(label, bar, text);
      $('transfers').append(li);
      row = { li, bar, text };
      state.transfers.set(data.id, row);
    }
    row.seen = Date.now();
    if (data.length) {
      row.bar.max = data.length;
      row.bar.value = data.offset;
      row.text.textContent = Math.floor((100 * data.offset) / data.length) + '% of ' + formatSize(data.length);
    } else {
      row.bar.removeAttribute('value');
      row.text.textContent = formatSize(data.offset) + ' so far';
    }
    $('transfers-box').hidden = false;
  }

  function forgetTransfer(id) {
    const row = state.transfers.get(id);
    if (row) {
      row.li.remove();
      state.transfers.delete(id);
    }
    $('transfers-box').hidden = state.transfers.size === 0;
  }

  // a transfer that stopped without finishing (its client went away) leaves the list after a while
  function sweepTransfers() {
    const now = Date.now();
    for (const [id, row] of state.transfers) {
      if (now - row.seen > STALE_TRANSFER_MS) forgetTransfer(id);
    }
  }

  // -- wiring ----------------------------------------------------------------------------

  function init() {
    $('auth-form').addEventListener('submit', (event) => {
      event.preventDefault();
      submitAuth('login');
    });
    $('register').addEventListener('click', () => submitAuth('register'));
    $('sign-out').addEventListener('click', () => signedOut(''));
    $('refresh').addEventListener('click', () => refreshGallery());
    $('confirm-delete-no').addEventListener('click', () => $('confirm-delete').close('cancelled'));
    $('confirm-delete-yes').addEventListener('click', deleteConfirmed);
    $('confirm-delete').addEventListener('close', deleteDialogClosed);
    $('player-close').addEventListener('click', () => $('player').close());
    $('player').addEventListener('close', playerClosed);
    setInterval(sweepTransfers, 60 * 1000);
    $('prev-page').addEventListener('click', () => { state.page = Math.max(1, state.page - 1); refreshGallery(); });
    $('next-page').addEventListener('click', () => { state.page += 1; refreshGallery(); });
    window.mediaserver = { refreshGallery, state };
    const notice = sessionStorage.getItem(NOTICE_KEY);
    sessionStorage.removeItem(NOTICE_KEY);
    restoreSession().then(() => { if (notice && !state.token) showError('auth-error', notice); });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
