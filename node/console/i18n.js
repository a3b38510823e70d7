// Every string a person reads in the console, in English and Simplified Chinese.
// The chosen language is remembered in localStorage; the default follows navigator.language.

const STORAGE_KEY = 'lingxi.console.lang';

/** Languages offered, with their own names. */
export const LANGS = [
  { code: 'zh', name: '中文' },
  { code: 'en', name: 'English' },
];

const en = {
  'app.title': 'Lingxi agent console',
  'app.brand': 'Lingxi',
  'app.loading': 'Loading…',
  'app.language': 'Language',
  'app.logout': 'Sign out',
  'app.tab.agent': 'Agent desk',
  'app.tab.supervisor': 'Supervisor',
  'app.tab.users': 'Users',
  'app.no_view': 'This account has no console view (role {role}, no agent).',
  'app.error.network': 'The switch cannot be reached. Check your connection.',
  'app.error.session': 'Your session has ended. Please sign in again.',
  'app.error.server': 'The switch answered: {message}',

  'role.admin': 'Administrator',
  'role.supervisor': 'Supervisor',
  'role.agent': 'Agent',

  'login.title': 'Sign in',
  'login.subtitle': 'Agent console',
  'login.username': 'Username',
  'login.password': 'Password',
  'login.submit': 'Sign in',
  'login.busy': 'Signing in…',
  'login.error.credentials': 'Wrong username or password.',
  'login.error.locked': 'Too many failed attempts. Try again in {time}.',
  'login.error.locked_unknown': 'Too many failed attempts. Try again later.',
  'login.error.missing': 'Enter your username and password.',

  'state.logged_out': 'Logged out',
  'state.ready': 'Ready',
  'state.not_ready': 'Not ready',
  'state.ringing': 'Ringing',
  'state.busy': 'On a call',
  'state.wrap_up': 'Wrap-up',
  'state.unknown': 'Unknown',
  'state.title': 'My status',
  'state.go_ready': 'Ready',
  'state.go_not_ready': 'Not ready',
  'state.reason': 'Reason',
  'state.since': 'for {time}',
  'state.error': 'Could not change state: {message}',

  'phone.title': 'Phone',
  'phone.offline': 'Phone offline',
  'phone.connecting': 'Connecting the phone…',
  'phone.connected': 'Phone connected, registering…',
  'phone.registered': 'Phone connected',
  'phone.reconnect': 'Reconnect',
  'phone.error': 'Phone: {message}',
  'phone.ringing': 'Incoming call',
  'phone.connecting_call': 'Connecting…',
  'phone.talking': 'Talking',
  'phone.held': 'On hold',

  'call.incoming': 'Incoming call',
  'call.queue': 'Queue',
  'call.answer': 'Answer',
  'call.hangup': 'Hang up',
  'call.decline': 'Decline',
  'call.hold': 'Hold',
  'call.unhold': 'Resume',
  'call.mute': 'Mute',
  'call.unmute': 'Unmute',
  'call.keypad': 'Keypad',
  'call.timer': 'Call time',
  'call.ended': 'Call ended',
  'call.ended_reason': 'Call ended ({reason})',
  'call.none': 'Waiting for calls. Go ready to receive calls.',
  'call.unknown_caller': 'Unknown caller',

  'transfer.title': 'Blind transfer',
  'transfer.to_queue': 'To a queue',
  'transfer.to_agent': 'To an agent',
  'transfer.target': 'Target',
  'transfer.choose_queue': 'Choose a queue',
  'transfer.agent_placeholder': 'Agent id',
  'transfer.submit': 'Transfer',
  'transfer.done': 'Call transferred.',

  'pop.title': 'Caller',
  'pop.empty': 'Caller details appear here when a call rings.',
  'pop.first_contact': 'First contact: no earlier interactions.',
  'pop.history': 'Earlier interactions ({count})',
  'pop.agent': 'Agent',
  'pop.talk': 'Talk',
  'pop.outcome': 'Outcome',
  'pop.disposition': 'Disposition',
  'pop.error': 'Caller details unavailable: {message}',

  'wrap.title': 'Wrap-up',
  'wrap.call': 'Call with {caller}',
  'wrap.disposition': 'Disposition',
  'wrap.choose': 'Choose a disposition',
  'wrap.note': 'Note',
  'wrap.note_placeholder': 'What was asked, what was done, any follow-up…',
  'wrap.ready_after': 'Ready for the next call after saving',
  'wrap.submit': 'Save',
  'wrap.saved': 'Wrap-up saved.',
  'wrap.error': 'Could not save the wrap-up: {message}',
  'wrap.required': 'Choose a disposition.',

  'kb.title': 'Knowledge base',
  'kb.search': 'Search articles and quick replies',
  'kb.all': 'All',
  'kb.articles': 'Articles',
  'kb.quick_replies': 'Quick replies',
  'kb.no_results': 'Nothing found.',
  'kb.hint': 'Type to search, in Chinese or English.',
  'kb.copy': 'Copy',
  'kb.copied': 'Copied to the clipboard.',
  'kb.copy_failed': 'Could not copy; select the text instead.',
  'kb.open': 'Open',
  'kb.close': 'Close',
  'kb.error': 'Search failed: {message}',
  'kb.updated': 'Updated {when} by {who}',

  'sup.title': 'Supervisor',
  'sup.queues': 'Queues',
  'sup.agents': 'Agents',
  'sup.calls': 'Live calls',
  'sup.updated': 'Updated {time}',
  'sup.stale': 'Not updated since {time}: {message}',
  'sup.queue': 'Queue',
  'sup.waiting': 'Waiting',
  'sup.longest': 'Longest wait',
  'sup.service_level': 'Service level',
  'sup.answered': 'Answered',
  'sup.abandoned': 'Abandoned',
  'sup.agents_ready': 'Agents ready',
  'sup.agent': 'Agent',
  'sup.state': 'State',
  'sup.reason': 'Reason',
  'sup.since': 'Since',
  'sup.call': 'Call',
  'sup.channel': 'Phone',
  'sup.web': 'Web',
  'sup.sip': 'SIP',
  'sup.caller': 'Caller',
  'sup.phase': 'Phase',
  'sup.node': 'Node',
  'sup.duration': 'Duration',
  'sup.none_queues': 'No queues.',
  'sup.none_agents': 'No agents.',
  'sup.none_calls': 'No live calls.',
  'sup.total_waiting': 'Callers waiting',
  'sup.total_ready': 'Agents ready',
  'sup.total_calls': 'Live calls',

  'phase.routing': 'Routing',
  'phase.queued': 'Queued',
  'phase.ringing': 'Ringing',
  'phase.talking': 'Talking',
  'phase.held': 'On hold',

  'outcome.call.completed': 'Completed',
  'outcome.queue.abandoned': 'Abandoned in queue',
  'outcome.queue.timeout': 'Queue timeout',
  'outcome.agent.no_answer': 'Agent did not answer',
  'outcome.failover.resumed': 'Completed after failover',
  'outcome.switch.shutdown': 'Switch shut down',

  'end.remote_hangup': 'the caller hung up',
  'end.local_hangup': 'you hung up',
  'end.cancelled': 'the caller hung up before the answer',
  'end.rejected': 'declined',
  'end.media_failed': 'audio could not be set up',
  'end.refused': 'refused by the switch',
  'end.transferred': 'transferred',
  'end.disconnected': 'connection lost',
  'end.shutdown': 'the switch is shutting down',

  'users.title': 'Users',
  'users.new': 'New user',
  'users.username': 'Username',
  'users.display_name': 'Display name',
  'users.role': 'Role',
  'users.agent': 'Agent',
  'users.optional': 'optional',
  'users.created': 'Created',
  'users.password': 'Password',
  'users.password_hint': 'At least 8 characters. An agent signs in with it and the console becomes that agent’s phone.',
  'users.create': 'Create user',
  'users.delete': 'Remove',
  'users.confirm_delete': 'Remove user {username}? Their sessions end.',
  'users.required': 'Username and password are required; an agent user needs its agent.',
  'users.error': 'The switch refused: {message}',
  'users.deleted': 'User {username} removed.',
  'users.done': 'User {username} created.',

  'toast.dismiss': 'Dismiss',
};

const zh = {
  'app.title': '灵犀坐席工作台',
  'app.brand': '灵犀',
  'app.loading': '加载中…',
  'app.language': '语言',
  'app.logout': '退出登录',
  'app.tab.agent': '坐席工作台',
  'app.tab.supervisor': '班长监控',
  'app.tab.users': '用户管理',
  'app.no_view': '此账号没有可用的工作台视图（角色 {role}，未绑定坐席）。',
  'app.error.network': '无法连接交换机，请检查网络。',
  'app.error.session': '会话已结束，请重新登录。',
  'app.error.server': '交换机返回：{message}',

  'role.admin': '管理员',
  'role.supervisor': '班长',
  'role.agent': '坐席',

  'login.title': '登录',
  'login.subtitle': '坐席工作台',
  'login.username': '用户名',
  'login.password': '密码',
  'login.submit': '登录',
  'login.busy': '正在登录…',
  'login.error.credentials': '用户名或密码错误。',
  'login.error.locked': '失败次数过多，请在 {time} 后重试。',
  'login.error.locked_unknown': '失败次数过多，请稍后重试。',
  'login.error.missing': '请输入用户名和密码。',

  'state.logged_out': '已签出',
  'state.ready': '就绪',
  'state.not_ready': '未就绪',
  'state.ringing': '振铃中',
  'state.busy': '通话中',
  'state.wrap_up': '话后处理',
  'state.unknown': '未知',
  'state.title': '我的状态',
  'state.go_ready': '就绪',
  'state.go_not_ready': '未就绪',
  'state.reason': '原因',
  'state.since': '已持续 {time}',
  'state.error': '无法切换状态：{message}',

  'phone.title': '话机',
  'phone.offline': '话机离线',
  'phone.connecting': '正在连接话机…',
  'phone.connected': '已连接，正在注册话机…',
  'phone.registered': '话机已连接',
  'phone.reconnect': '重新连接',
  'phone.error': '话机：{message}',
  'phone.ringing': '来电',
  'phone.connecting_call': '正在接通…',
  'phone.talking': '通话中',
  'phone.held': '保持中',

  'call.incoming': '来电',
  'call.queue': '队列',
  'call.answer': '接听',
  'call.hangup': '挂断',
  'call.decline': '拒接',
  'call.hold': '保持',
  'call.unhold': '恢复',
  'call.mute': '静音',
  'call.unmute': '取消静音',
  'call.keypad': '拨号盘',
  'call.timer': '通话时长',
  'call.ended': '通话已结束',
  'call.ended_reason': '通话已结束（{reason}）',
  'call.none': '等待来电。切换为“就绪”即可接听来电。',
  'call.unknown_caller': '未知号码',

  'transfer.title': '盲转',
  'transfer.to_queue': '转队列',
  'transfer.to_agent': '转坐席',
  'transfer.target': '目标',
  'transfer.choose_queue': '选择队列',
  'transfer.agent_placeholder': '坐席工号',
  'transfer.submit': '转接',
  'transfer.done': '已转接。',

  'pop.title': '来电客户',
  'pop.empty': '来电振铃时在此显示客户信息。',
  'pop.first_contact': '首次来电：无历史接触记录。',
  'pop.history': '历史接触（{count}）',
  'pop.agent': '坐席',
  'pop.talk': '通话',
  'pop.outcome': '结果',
  'pop.disposition': '处理结果',
  'pop.error': '无法获取客户信息：{message}',

  'wrap.title': '话后处理',
  'wrap.call': '与 {caller} 的通话',
  'wrap.disposition': '处理结果',
  'wrap.choose': '请选择处理结果',
  'wrap.note': '备注',
  'wrap.note_placeholder': '客户诉求、处理情况、后续跟进…',
  'wrap.ready_after': '保存后进入就绪，接听下一通电话',
  'wrap.submit': '保存',
  'wrap.saved': '话后处理已保存。',
  'wrap.error': '无法保存话后处理：{message}',
  'wrap.required': '请选择处理结果。',

  'kb.title': '知识库',
  'kb.search': '搜索知识文章和快捷回复',
  'kb.all': '全部',
  'kb.articles': '知识文章',
  'kb.quick_replies': '快捷回复',
  'kb.no_results': '未找到相关内容。',
  'kb.hint': '输入关键词搜索，支持中文和英文。',
  'kb.copy': '复制',
  'kb.copied': '已复制到剪贴板。',
  'kb.copy_failed': '复制失败，请手动选择文字。',
  'kb.open': '查看',
  'kb.close': '收起',
  'kb.error': '搜索失败：{message}',
  'kb.updated': '{who} 更新于 {when}',

  'sup.title': '班长监控',
  'sup.queues': '队列',
  'sup.agents': '坐席',
  'sup.calls': '实时通话',
  'sup.updated': '更新于 {time}',
  'sup.stale': '自 {time} 起未更新：{message}',
  'sup.queue': '队列',
  'sup.waiting': '排队数',
  'sup.longest': '最长等待',
  'sup.service_level': '服务水平',
  'sup.answered': '已接听',
  'sup.abandoned': '放弃',
  'sup.agents_ready': '就绪坐席',
  'sup.agent': '坐席',
  'sup.state': '状态',
  'sup.reason': '原因',
  'sup.since': '持续',
  'sup.call': '通话',
  'sup.channel': '终端',
  'sup.web': '网页',
  'sup.sip': 'SIP',
  'sup.caller': '主叫',
  'sup.phase': '阶段',
  'sup.node': '节点',
  'sup.duration': '时长',
  'sup.none_queues': '暂无队列。',
  'sup.none_agents': '暂无坐席。',
  'sup.none_calls': '暂无通话。',
  'sup.total_waiting': '排队客户',
  'sup.total_ready': '就绪坐席',
  'sup.total_calls': '实时通话',

  'phase.routing': '路由中',
  'phase.queued': '排队中',
  'phase.ringing': '振铃中',
  'phase.talking': '通话中',
  'phase.held': '保持中',

  'outcome.call.completed': '已完成',
  'outcome.queue.abandoned': '排队中放弃',
  'outcome.queue.timeout': '排队超时',
  'outcome.agent.no_answer': '坐席未接听',
  'outcome.failover.resumed': '故障切换后完成',
  'outcome.switch.shutdown': '交换机关闭',

  'end.remote_hangup': '对方已挂断',
  'end.local_hangup': '您已挂断',
  'end.cancelled': '接听前对方已挂断',
  'end.rejected': '已拒接',
  'end.media_failed': '无法建立语音',
  'end.refused': '交换机拒绝',
  'end.transferred': '已转接',
  'end.disconnected': '连接中断',
  'end.shutdown': '交换机正在关闭',

  'users.title': '用户',
  'users.new': '新建用户',
  'users.username': '用户名',
  'users.display_name': '显示名称',
  'users.role': '角色',
  'users.agent': '坐席',
  'users.optional': '可选',
  'users.created': '创建时间',
  'users.password': '密码',
  'users.password_hint': '至少 8 个字符。坐席用户用它登录后，浏览器即成为该坐席的话机。',
  'users.create': '创建用户',
  'users.delete': '删除',
  'users.confirm_delete': '删除用户 {username}？其会话将被终止。',
  'users.required': '用户名和密码必填；坐席用户需指定坐席。',
  'users.error': '交换机拒绝：{message}',
  'users.deleted': '已删除用户 {username}。',
  'users.done': '已创建用户 {username}。',

  'toast.dismiss': '关闭',
};

/** The dictionaries, by language code. */
export const DICTS = { en, zh };

let current = initialLang();
const listeners = new Set();

function initialLang() {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved && DICTS[saved]) return saved;
  } catch (_) {
    // Storage disabled: fall through to the browser's language.
  }
  const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
  for (const l of langs) {
    const s = String(l).toLowerCase();
    if (s.startsWith('zh')) return 'zh';
    if (s.startsWith('en')) return 'en';
  }
  return 'en';
}

/** The current language code: "zh" or "en". */
export function lang() {
  return current;
}

/** The BCP 47 tag of the current language, for Intl and `<html lang>`. */
export function locale() {
  return current === 'zh' ? 'zh-CN' : 'en';
}

/** Switches language, remembers it, and tells every listener. */
export function setLang(code) {
  if (!DICTS[code] || code === current) return;
  current = code;
  try {
    localStorage.setItem(STORAGE_KEY, code);
  } catch (_) {
    // Not remembered; still switched for this page.
  }
  document.documentElement.lang = locale();
  document.title = t('app.title');
  for (const fn of listeners) fn(code);
}

/** Calls `fn(code)` after each language change. */
export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** The text for `key` with `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  const s = DICTS[current][key] ?? DICTS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** The label of a `{code, label_en, label_zh}` entry (reasons, dispositions) in the current language. */
export function label(entry) {
  if (!entry) return '';
  return (current === 'zh' ? entry.label_zh : entry.label_en) || entry.label_en || entry.label_zh || entry.code;
}

/** An agent state's name, e.g. "ready" → "Ready" / "就绪". */
export function stateName(state) {
  const key = `state.${state}`;
  return key in en ? t(key) : state || t('state.unknown');
}

/** A CDR outcome code's name; unknown codes are shown as they are. */
export function outcomeName(code) {
  const key = `outcome.${code}`;
  return key in en ? t(key) : code || '';
}

/** Why a call ended (the phone's stable reason code), in words; unknown codes as they are. */
export function endReason(code) {
  const key = `end.${code}`;
  return key in en ? t(key) : code || '';
}

/** A date and time in the current language. */
export function dateTime(ms) {
  if (!ms) return '';
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'short', timeStyle: 'short' }).format(new Date(ms));
}

/** A clock time (hh:mm:ss) in the current language. */
export function clock(ms) {
  return new Intl.DateTimeFormat(locale(), { timeStyle: 'medium' }).format(new Date(ms));
}

document.documentElement.lang = locale();
