"""The patterns the Tenant CRD and `spec.py` share.

`crds/tenant.yaml` carries each of these verbatim (in a `pattern` or a CEL
`matches()`), and tests/unit/test_crd_contract.py checks that it does: a value
the API server admits is one the operator parses. They are RE2-compatible (the
API server's regex engine) and anchored."""

from __future__ import annotations

import re


def _list_of(item: str) -> str:
    return f"{item}(,{item})*"


def _cron_field(number: str, names: str = "", question: bool = False) -> str:
    value = f"({number}|{names})" if names else f"({number})"
    item = f"(\\*|{value}(-{value})?)(/[1-9][0-9]?)?"
    return _list_of(f"({item}|\\?)" if question else f"({item})")


_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_DAYS = "SUN|MON|TUE|WED|THU|FRI|SAT"

# What a CronJob accepts (standard 5 fields with numbers in range, names, lists,
# ranges and steps, `?` for day of month or week; or a macro).
CRON = ("^(@(hourly|daily|weekly|monthly|yearly|annually|midnight)|"
        + "[ \\t]+".join([
            _cron_field("[0-5]?[0-9]"),
            _cron_field("[01]?[0-9]|2[0-3]"),
            _cron_field("0?[1-9]|[12][0-9]|3[01]", question=True),
            _cron_field("0?[1-9]|1[0-2]", f"{_MONTHS}|{_MONTHS.lower()}"),
            _cron_field("[0-7]", f"{_DAYS}|{_DAYS.lower()}", question=True),
        ]) + ")$")

# ResourceQuota keys the API server accepts: the standard ones, huge pages, and
# any qualified name with a prefix (requests.nvidia.com/gpu, count/jobs.batch,
# <class>.storageclass.storage.k8s.io/requests.storage). `storage`, `limits.storage`
# or `foo` are refused by the API server, so they are refused here.
_DNS_SUBDOMAIN = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
QUOTA_KEY = ("^(cpu|memory|ephemeral-storage|pods|services|services\\.nodeports|services\\.loadbalancers|"
             "configmaps|secrets|persistentvolumeclaims|replicationcontrollers|resourcequotas|"
             "requests\\.(cpu|memory|storage|ephemeral-storage)|limits\\.(cpu|memory|ephemeral-storage)|"
             "(requests\\.)?hugepages-[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|[kMGTPE])?|"
             f"{_DNS_SUBDOMAIN}/[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?)$")

# Names Kubernetes validates as a DNS-1123 subdomain: an IngressClass, a
# ClusterIssuer, a ServiceAccount.
DNS_SUBDOMAIN = f"^{_DNS_SUBDOMAIN}$"
DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# A grace period: days, hours, minutes, seconds, each at most a few digits; the
# total is at most MAX_GRACE_SECONDS (checked by a CEL rule and by spec.py).
GRACE_PERIOD = "^([0-9]{1,4}d)?([0-9]{1,6}h)?([0-9]{1,8}m)?([0-9]{1,9}s)?$"
MAX_GRACE_SECONDS = 3650 * 86400     # ten years

# A quantity as the API server parses it, never negative.
QUANTITY = "^\\+?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([KMGTPE]i|[eE][-+]?[0-9]+|[numkMGTPE])?$"

# List lengths (maxItems / maxProperties in the CRD).
MAX_ITEMS = {"spec.domains": 50, "spec.databases": 20, "spec.objectStorage.buckets": 20,
             "spec.messaging.queues": 50, "spec.admins": 50, "spec.quota": 30}

CRON_RE, QUOTA_KEY_RE, DNS_SUBDOMAIN_RE, DNS_LABEL_RE, GRACE_PERIOD_RE = (
    re.compile(p) for p in (CRON, QUOTA_KEY, DNS_SUBDOMAIN, DNS_LABEL, GRACE_PERIOD))
