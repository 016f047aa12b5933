# The openai-client example of README.md, kept here so test_readme_example.py runs it verbatim
# (after pointing it at the test server). Start the server first:
#   mtmd serve -m model.gguf --mmproj mmproj.gguf --port 8080
import base64

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="none")
model = client.models.list().data[0].id

with open("photo.png", "rb") as f:
    image_url = "data:image/png;base64," + base64.b64encode(f.read()).decode()

stream = client.chat.completions.create(
    model=model,
    messages=[
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": "What is in this picture?"},
            ],
        }
    ],
    max_tokens=128,
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
