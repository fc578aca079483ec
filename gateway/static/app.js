/* The upload page: sign-in, an Uppy Dashboard uploading over tus to /files/, and the gallery.
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
  const POLL_MS = 2000;
  const MAX_POLLS = 90;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // outline icons (24x24) for items without a thumbnail: [tag, attributes] per shape
  const ICONS = {
    images: [['rect', { x: 3, y: 4, width: 18, height: 16, rx: 2 }], ['circle', { cx: 8.5, cy: 9.5, r: 1.5 }],
      ['path', { d: 'M21 16l-5-5-9 9' }]],
    videos: [['rect', { x: 3, y: 5, width: 18, height: 14, rx: 2 }], ['path', { d: 'M10 9l5 3-5 3z' }]],
    files: [['path', { d: 'M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8z' }], ['path', { d: 'M14 3v5h5' }]],
  };

  const $ = (id) => document.getElementById(id);
  const state = { token: null, user: null, page: 1, pages: 1, polls: 0, pollTimer: null, loading: null };

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
  }

  function signedOut(message) {
    state.token = null;
    state.user = null;
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
    if (window.uppy) {
      // Start over with a fresh page: uploads in progress stop, no one else's token stays in
      // memory, and their tus URLs stay stored, so adding the same file again resumes them.
      if (message) sessionStorage.setItem(NOTICE_KEY, message);
      window.location.reload();
      return;
    }
    clearTimeout(state.pollTimer);
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
    uppy.on('upload-success', () => refreshGallery());
    uppy.on('complete', () => refreshGallery());
    window.uppy = uppy;
    announceMaxSize(uppy);
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

  function formatSize(bytes) {
    if (bytes === null || bytes === undefined) return '';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
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

  function renderItem(item) {
    const li = element('li', 'media-item');
    li.dataset.id = item.id;
    li.dataset.status = item.status;
    const thumb = element('div', 'media-thumb');
    if (item.thumbnailUrl) {
      const img = element('img');
      img.src = item.thumbnailUrl;
      img.alt = item.filename || item.type;
      img.loading = 'lazy';
      img.addEventListener('error', () => img.replaceWith(placeholder(item.type)), { once: true });
      thumb.append(img);
    } else {
      thumb.append(placeholder(item.type));
    }
    li.append(thumb);

    const info = element('div', 'media-info');
    const name = item.filename || item.id;
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
    const status = element('span', 'status status-' + item.status, item.status);
    if (item.reason) status.title = item.reason;
    meta.append(status);
    info.append(meta);
    li.append(info);
    return li;
  }

  async function refreshGallery() {
    if (!state.token) return;
    if (state.loading) return state.loading;
    state.loading = (async () => {
      try {
        const data = await api('/api/media?page=' + state.page + '&limit=' + PAGE_SIZE);
        if (!state.token) return;
        showError('gallery-error', '');
        const items = data.items || [];
        state.pages = Math.max(1, data.pages || 1);
        if (state.page > state.pages) {
          state.page = state.pages;
          state.loading = null;
          refreshGallery();
          return;
        }
        $('gallery').replaceChildren(...items.map(renderItem));
        $('gallery-empty').hidden = items.length > 0;
        $('gallery-count').textContent = data.total ? data.total + (data.total === 1 ? ' item' : ' items') : '';
        $('prev-page').hidden = state.page <= 1;
        $('next-page').hidden = state.page >= state.pages;
        $('page-info').textContent = state.pages > 1 ? 'Page ' + state.page + ' of ' + state.pages : '';
        schedulePoll(items.some((item) => item.status === 'processing'));
      } catch (err) {
        if (state.token) showError('gallery-error', err.message);
      }
    })();
    try {
      await state.loading;
    } finally {
      state.loading = null;
    }
  }

  // while thumbnails are being made, look again now and then
  function schedulePoll(processing) {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    if (!processing) {
      state.polls = 0;
      return;
    }
    if (state.polls >= MAX_POLLS) return;
    state.polls += 1;
    state.pollTimer = setTimeout(refreshGallery, POLL_MS);
  }

  // -- wiring ----------------------------------------------------------------------------

  function init() {
    $('auth-form').addEventListener('submit', (event) => {
      event.preventDefault();
      submitAuth('login');
    });
    $('register').addEventListener('click', () => submitAuth('register'));
    $('sign-out').addEventListener('click', () => signedOut(''));
    $('refresh').addEventListener('click', () => { state.polls = 0; refreshGallery(); });
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
