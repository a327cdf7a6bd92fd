"""Route calls that already go through LiteLLM or the OpenAI SDK with banditroute.

``banditroute.integrations.litellm`` (extra ``banditroute[litellm]``) plugs into a ``litellm.Router`` as its
custom routing strategy and sends feedback from a LiteLLM callback; ``banditroute.integrations.openai``
(extra ``banditroute[openai]``) wraps one OpenAI-compatible client per model. Both send exactly one feedback
event per routed call, errors and fallbacks included, crediting the model that actually served it.
"""
