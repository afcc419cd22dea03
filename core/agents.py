"""The three specialist agents: who they are, what they know, and how they use the knowledge base.

Each `AgentSpec` is data, not code: the router embeds `description` and `examples`, the agent node reads
`strategy` to decide between retrieval (RAG), cached documents in the prompt (CAG) or both (hybrid). Adding an
agent is adding a spec here and a folder of documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Strategy = Literal["rag", "cag", "hybrid"]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    label: str
    strategy: Strategy
    description: str
    lane: str  # one sentence for the system prompt: what this agent does and does not handle
    examples: tuple[str, ...]


BILLING = AgentSpec(
    name="billing",
    label="Billing",
    strategy="hybrid",
    description=(
        "Billing and account money matters: plans and pricing, what a plan costs, upgrades and downgrades, "
        "proration, invoices and receipts, payment methods and cards, failed payments, refunds, charges, "
        "taxes and VAT, free trials, seats, usage overages, discounts, cancelling a subscription."
    ),
    lane="You answer questions about plans, prices, invoices, payments, refunds, taxes, trials and subscriptions.",
    examples=(
        "How much is the Pro plan per month?",
        "what's the price difference between monthly and annual billing",
        "I was charged twice this month, can you check?",
        "How do I get a refund for the unused part of my subscription?",
        "Where can I download my invoices?",
        "Can I pay by bank transfer instead of credit card?",
        "my card was declined and now my account says past due",
        "How do I add our VAT number to the invoice?",
        "Do you charge sales tax?",
        "We want to move from the monthly plan to yearly",
        "How does proration work if I change plans mid-cycle?",
        "Can I downgrade to a cheaper plan?",
        "What happens when my free trial ends?",
        "how much do extra seats cost",
        "we went over our event quota, will we be billed for overages?",
        "Do you offer discounts for nonprofits or schools?",
        "How do I cancel my subscription?",
        "change the billing email that receives receipts",
        "Is there a free tier?",
        "quote for 50 users on the top plan",
        "update credit card",
        "why is my bill higher than last month",
    ),
)

TECHNICAL = AgentSpec(
    name="technical",
    label="Technical",
    strategy="rag",
    description=(
        "Technical support for developers and admins: the REST API, API keys and authentication, OAuth, "
        "rate limits and 429 errors, timeouts and retries, webhooks, SDKs and their error codes, SSO and SAML "
        "setup, SCIM provisioning, integrations, data ingestion and exports, dashboards not loading, outages "
        "and the status page."
    ),
    lane="You answer technical questions about the API, SDKs, webhooks, integrations, SSO setup and outages.",
    examples=(
        "My API requests keep failing with a 401 Unauthorized",
        "how do I rotate an API key",
        "we're hitting 429 Too Many Requests from the API",
        "requests time out after 30 seconds, what should my client timeout be?",
        "Webhook signature verification fails on my server",
        "the python SDK throws a connection reset error",
        "How do I set up SAML single sign-on with Okta?",
        "SCIM provisioning isn't creating users",
        "Is the service down right now? Dashboard won't load",
        "How do I export all my events to S3?",
        "What does error code E1003 mean?",
        "batch endpoint returns 413 payload too large",
        "how should I retry failed requests without creating duplicates",
        "webhooks are not being delivered to my endpoint",
        "Which API version should I pin?",
        "javascript sdk not sending events from the browser",
        "charts are empty even though we send data",
        "How do I authenticate with OAuth instead of an API key?",
        "getting SSL handshake errors when calling the endpoint",
        "is there a sandbox environment for testing",
        "connect to Segment integration",
        "curl example for tracking an event",
    ),
)

POLICY = AgentSpec(
    name="policy",
    label="Policy",
    strategy="cag",
    description=(
        "Legal, privacy, security and compliance policy: GDPR, the data processing agreement (DPA), data "
        "retention and deletion, where data is stored, the service level agreement (SLA) and service credits, "
        "security practices and encryption, certifications, subprocessors, acceptable use, the privacy policy "
        "and cookies."
    ),
    lane=(
        "You answer questions about privacy, GDPR, the DPA, data retention and deletion, the SLA and credits, "
        "security, subprocessors and acceptable use."
    ),
    examples=(
        "Are you GDPR compliant?",
        "Can we sign a data processing agreement?",
        "How long do you keep our data after we delete it?",
        "Where are your servers located? Is data stored in the EU?",
        "What uptime do you guarantee?",
        "we had an outage, are we entitled to service credits?",
        "Is data encrypted at rest?",
        "Do you have SOC 2 or ISO 27001?",
        "Who are your subprocessors?",
        "what counts as abuse under your acceptable use policy",
        "How do I request deletion of a user's personal data?",
        "Do you sell our data to third parties?",
        "what cookies does your website set",
        "How do you handle a data breach? Will you notify us?",
        "can I get a copy of your security whitepaper",
        "right to be forgotten request for one of our end users",
        "do you transfer data outside the EU, standard contractual clauses?",
        "is there a HIPAA BAA",
        "how do I report a vulnerability",
        "what happens to our data when the contract ends",
        "are we allowed to send health data",
        "penetration test report",
    ),
)

AGENTS: dict[str, AgentSpec] = {spec.name: spec for spec in (BILLING, TECHNICAL, POLICY)}
