#!/usr/bin/env python3
"""Writes events.jsonl: a small, realistic event log for program.json.

Deterministic (seeded). Covers clicks through links with UTM fields, signups with lead
status changes, orders with tax, line items and promo codes, full and partial refunds,
engagement snapshots, a resent duplicate and a self-referral. Run from this folder:
    python3 make_events.py > events.jsonl
"""
import datetime
import json
import random

random.seed(11)
T0 = datetime.datetime(2026, 11, 2, 9, 0, 0, tzinfo=datetime.timezone.utc)
LINKS = {
    "spring-glow": ["anna-spring", "ben-spring"],
    "skin-tiers": ["chloe-skin", "ben-skin"],
    "app-signups": ["dev-app", "emma-app"],
    "hybrid-ambassadors": ["emma-amb", "anna-amb"],
}
events = []


def ts(sec):
    return (T0 + datetime.timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ev(sec, payload, **extra):
    e = {"eventId": f"evt-{len(events) + 1:05d}", "occurredAt": ts(sec)}
    e.update(extra)
    e.update(payload)
    events.append((sec, e))


orders = []
sec = 0
for v in range(1, 161):
    visitor = f"visitor-{v:04d}"
    camp = random.choice(list(LINKS))
    sec += random.randint(60, 900)
    for _ in range(random.randint(1, 3)):
        link = random.choice(LINKS[camp])
        click = {"visitorId": visitor, "linkCode": link,
                 "utm": {"source": "instagram", "medium": "social", "campaign": camp},
                 "landingUrl": "https://shop.example/"}
        ev(sec, {"click": click}, context={"ip": f"203.0.113.{v % 250}", "userAgent": "Mozilla/5.0"})
        sec += random.randint(30, 3600)
    if camp == "app-signups":
        if random.random() < 0.5:
            lead = f"lead-{v:04d}"
            ev(sec, {"signup": {"visitorId": visitor, "leadId": lead, "email": f"user{v}@mail.example"}})
            status = random.choice(["LEAD_QUALIFICATION_QUALIFIED"] * 2 + ["LEAD_QUALIFICATION_REJECTED"])
            ev(sec + 86400, {"leadStatus": {"leadId": lead, "status": status}})
        continue
    if random.random() < 0.55:
        oid = f"order-{v:04d}"
        amount = random.choice([24.00, 39.90, 59.00, 80.00, 120.50, 199.99])
        tax = round(amount * 0.08, 2)
        items = [{"sku": "sku-1", "category": "skincare", "quantity": 1, "unitPrice": f"{amount:.2f}"}]
        if random.random() < 0.1:
            items.append({"sku": "gift-25", "category": "gift-cards", "quantity": 1, "unitPrice": "25.00"})
            amount += 25
        codes = ["anna10"] if random.random() < 0.15 else []
        order = {"visitorId": visitor, "orderId": oid,
                 "amount": {"amount": f"{amount + tax:.2f}", "currency": "USD"},
                 "tax": {"amount": f"{tax:.2f}", "currency": "USD"},
                 "lineItems": items, "promoCodes": codes, "email": f"user{v}@mail.example"}
        ev(sec + 5, {"order": order}, customerId=f"cust-{v:04d}")
        orders.append((sec + 5, oid, amount + tax))
    if camp == "hybrid-ambassadors" and random.random() < 0.3:
        creator = "emma" if random.random() < 0.6 else "anna"
        engagement = {"creatorId": creator, "campaignId": "hybrid-ambassadors", "postId": f"post-{creator}-1",
                      "platform": "tiktok", "views": str(random.randint(500, 50000)),
                      "likes": str(random.randint(10, 2000)), "comments": "12", "shares": "3"}
        ev(sec + 60, {"engagement": engagement})

for (s, oid, amount) in orders:
    r = random.random()
    if r < 0.08:
        ev(s + 86400 * 3, {"adjustment": {"orderId": oid, "kind": "ADJUSTMENT_KIND_REFUND", "reason": "returned"}})
    elif r < 0.13:
        half = {"amount": f"{amount / 2:.2f}", "currency": "USD"}
        ev(s + 86400 * 2, {"adjustment": {"orderId": oid, "kind": "ADJUSTMENT_KIND_REFUND", "amount": half,
                                          "reason": "one item returned"}})

events.append((events[10][0], dict(events[10][1])))  # a resent duplicate
ev(sec + 100, {"click": {"visitorId": "visitor-self", "linkCode": "anna-spring"}})
ev(sec + 400, {"order": {"visitorId": "visitor-self", "orderId": "order-self",
                         "amount": {"amount": "50.00", "currency": "USD"}}}, customerId="cust-anna")
events.sort(key=lambda x: x[0])
for _, e in events:
    print(json.dumps(e, separators=(",", ":")))
