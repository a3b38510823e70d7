#!/usr/bin/env python3
"""Summarise a bench/run.sh results folder as Markdown tables (medians over runs).

usage: summarize.py <results dir>   (reads lingxi_cps.jsonl, kamailio_cps.jsonl, lingxi_conc.jsonl)
"""
import json, os, statistics, sys
from collections import defaultdict

work = sys.argv[1]


def load(name):
    path = os.path.join(work, name)
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip().startswith('{')]


def med(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 2) if xs else None


def passed(d):
    """The anchor's rule (< 0.1 % failed at ≥ 90 % of the rate); for Lingxi also ≥ 99.9 % of calls
    bridged to an agent: the switch answers callers at once, so sipp alone cannot see a call that
    waited in the queue until the caller hung up."""
    bridged = d['bridged'] / max(1, d['created']) >= 0.999 if 'bridged' in d else True
    return d['failed_pct'] < 0.1 and (d['sustained_cps_median'] or 0) >= 0.9 * d['target_cps'] and bridged


def ceiling(rows):
    """Per run (rows in file order, a new run when the target rate does not increase), the highest
    passing target rate; returns the list over runs."""
    runs, cur, last = [], [], None
    for d in rows:
        if last is not None and d['target_cps'] <= last:
            runs.append(cur); cur = []
        cur.append(d); last = d['target_cps']
    if cur:
        runs.append(cur)
    return [max([d['target_cps'] for d in r if passed(d)] or [0]) for r in runs]


out = []
if os.path.exists(os.path.join(work, 'machine.txt')):
    out += ['```', open(os.path.join(work, 'machine.txt')).read().strip(), '```', '']

lx = [d for d in load('lingxi_cps.jsonl') if not d.get('recording')]
lx_rec = [d for d in load('lingxi_cps.jsonl') if d.get('recording')]
km = load('kamailio_cps.jsonl')


def cps_table(title, rows, proc):
    if not rows:
        return []
    by = defaultdict(list)
    for d in rows:
        by[d['target_cps']].append(d)
    t = [f'### {title}', '',
         f'| target cps | runs | achieved cps (median) | failed % | retrans | bridged to agent % | {proc} CPU % of 1 core | sipp uas+uac CPU % | machine busy % (of 200) | pass |',
         '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for rate in sorted(by):
        ds = by[rate]
        bridged = med([100.0 * d['bridged'] / max(1, d['created']) for d in ds if 'bridged' in d])
        t.append('| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |'.format(
            int(rate), len(ds), med([d['sustained_cps_median'] for d in ds]), med([d['failed_pct'] for d in ds]),
            med([d['retrans'] for d in ds]), bridged if bridged is not None else 'n/a',
            med([d['cpu_pct_of_one_core'].get(proc) for d in ds]),
            med([d['cpu_pct_of_one_core'].get('uas', 0) + d['cpu_pct_of_one_core'].get('uac', 0) for d in ds]),
            med([d['cpu_pct_of_one_core'].get('system_total') for d in ds]),
            sum(passed(d) for d in ds), len(ds)))
    return t + ['']


out += cps_table('Lingxi: calls per second (recording off)', lx, 'lingxi')
out += cps_table('Lingxi: calls per second (recording on, one run)', lx_rec, 'lingxi')
out += cps_table('Kamailio anchor (stateful proxy), same rates and call length', km, 'kamailio')
if lx and km:
    cl, ck = ceiling(lx), ceiling(km)
    out += [f'Highest passing rate per run: Lingxi {cl}, Kamailio {ck}; '
            f'ratio of medians Lingxi/Kamailio = {med(cl)}/{med(ck)} = '
            f'{round(med(cl) / med(ck), 2) if med(ck) else "n/a"} (capped by the highest rate tried).', '']

conc = load('lingxi_conc.jsonl')
if conc:
    out += ['### Lingxi: concurrent bridged calls with RTP', '',
            '| recording | target calls | failed | peak bridged (CDRs) | callers live at plateau (sipp) | RTP in pkt/s | RTP out pkt/s | expected each way | idle RSS MiB | plateau RSS MiB | KiB per call | lingxi CPU % of 1 core |',
            '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for d in conc:
        out.append('| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |'.format(
            'on' if d['recording'] else 'off', d['target_calls'], d['failed'], d.get('peak_bridged', 'n/a'), d['plateau_live_calls'],
            d['rtp_in_pps'], d['rtp_out_pps'], d['expected_pps_each_way'], round(d['idle_rss_kb'] / 1024, 1),
            round(d['plateau_rss_kb'] / 1024, 1) if d['plateau_rss_kb'] else None, d['kib_per_call'],
            d['cpu_pct_of_one_core_whole_run']['lingxi']))
    out.append('')
print('\n'.join(out))
