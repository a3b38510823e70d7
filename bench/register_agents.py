#!/usr/bin/env python3
"""Writes a sipp scenario that registers agents FIRST..FIRST+COUNT-1 (password "pw<id>") one
after the other in ONE sipp call, so every binding's source is the sipp port, where the
benchmark's UAS (every agent's phone) listens afterwards. Keep COUNT ≤ 40: sipp 3.6.1 refuses
scenario files much over 64 KB ("Unable to load or parse"), so run.sh registers in chunks.

Why not `-inf agents.csv` with `[authentication username=[field0] password=[field1]]`: sipp
3.6.1 does not nest keywords inside `[authentication ...]` (its keyword ends at the first `]`),
the Authorization header comes out mangled (seen on the wire). Literal credentials work.

usage: register_agents.py FIRST COUNT > register_chunk.xml
       sipp <switch> -sf register_chunk.xml -p <uas port> -m 1
"""
import sys

first, count = int(sys.argv[1]), int(sys.argv[2])
REQ = '''  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:{id}@lingxi.local>;tag=[pid]SIPpTag{id}
      To: <sip:{id}@lingxi.local>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:{id}@[local_ip]:[local_port];transport=[transport]>
{auth}      Max-Forwards: 70
      Expires: 3600
      User-Agent: sipp bench agent
      Content-Length: 0

    ]]>
  </send>
'''
out = ['<?xml version="1.0" encoding="ISO-8859-1" ?>', '<!DOCTYPE scenario SYSTEM "sipp.dtd">',
       f'<scenario name="Lingxi bench: register agents {first}..{first + count - 1}">']
for n in range(count):
    agent = first + n
    out.append(REQ.format(id=agent, cseq=2 * n + 1, auth=''))
    out.append('  <recv response="401" auth="true"/>')
    auth = f'      [authentication username={agent} password=pw{agent}]\n'
    out.append(REQ.format(id=agent, cseq=2 * n + 2, auth=auth))
    out.append('  <recv response="200"/>')
out.append('</scenario>')
print('\n'.join(out))
