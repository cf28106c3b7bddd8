// Command gotemplate renders Ollama TEMPLATE strings with Go's text/template, the engine Ollama
// uses, emulating the values Ollama's chat endpoint passes to a template.
//
// Input (stdin, JSON): {"cases": [{"template": "...", "system": "...", "messages": [{"role":
// "user", "content": "..."}]}]}. "system" is the Modelfile SYSTEM. Output (stdout, JSON):
// {"results": [{"output": "...", "error": ""}]}, one per case, in order.
//
// Emulated (written from Ollama's documented behaviour, server/routes.go and template/template.go):
//   - the Modelfile SYSTEM is prepended as a system message unless the request's first message is
//     a system message;
//   - consecutive messages with the same role are merged with "\n\n" (tool messages excepted);
//   - .System is every system message joined with "\n\n"; .Messages keeps the system messages;
//   - .Prompt and .Response are empty; missing keys render as zero values;
//   - a message's .Thinking is the reasoning Ollama splits off a reply (api.Message.Thinking); a
//     case's "think" (true/false, absent = unset) is the request's `think`: .Think and .IsThinkSet;
//   - .Tools is the request's tools (nil when none) and a message's .ToolCalls its calls, shaped
//     like Ollama's api.Tool / api.ToolCall (.Function.Name, .Function.Arguments, ...); `json`
//     prints a value as compact JSON (encoding/json, map keys sorted), as Ollama's `json` does.
//
// Only templates that use .Messages are rendered (the legacy .Prompt/.Response mode is refused).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type ToolCallFunction struct {
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments"`
}

type ToolCall struct {
	ID       string           `json:"id,omitempty"`
	Function ToolCallFunction `json:"function"`
}

type ToolFunction struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Parameters  any    `json:"parameters"`
}

type Tool struct {
	Type     string       `json:"type"`
	Function ToolFunction `json:"function"`
}

type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type Case struct {
	Template string    `json:"template"`
	System   string    `json:"system"`
	Messages []Message `json:"messages"`
	Tools    []Tool    `json:"tools"`
	Think    *bool     `json:"think"`
}

type Result struct {
	Output string `json:"output"`
	Error  string `json:"error"`
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var out []*Message
	for i := range msgs {
		m := msgs[i]
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if len(out) > 0 && out[len(out)-1].Role == m.Role && m.Role != "tool" {
			out[len(out)-1].Content += "\n\n" + m.Content
		} else {
			out = append(out, &m)
		}
	}
	return strings.Join(system, "\n\n"), out
}

func render(c Case) (string, error) {
	if !strings.Contains(c.Template, ".Messages") {
		return "", fmt.Errorf("template does not use .Messages; only Ollama's messages mode is emulated")
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
	if err != nil {
		return "", err
	}
	msgs := c.Messages
	if len(msgs) > 0 && msgs[0].Role != "system" && c.System != "" {
		msgs = append([]Message{{Role: "system", Content: c.System}}, msgs...)
	}
	system, collated := collate(msgs)
	var tools any // nil, not an empty list, when the request has no tools (so `if .Tools` is false)
	if len(c.Tools) > 0 {
		tools = c.Tools
	}
	var b strings.Builder
	err = tmpl.Execute(&b, map[string]any{
		"System": system, "Messages": collated, "Tools": tools, "Prompt": "", "Response": "",
		"Think": c.Think != nil && *c.Think, "IsThinkSet": c.Think != nil,
	})
	return b.String(), err
}

func main() {
	var in struct {
		Cases []Case `json:"cases"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "gotemplate: bad input:", err)
		os.Exit(2)
	}
	results := make([]Result, len(in.Cases))
	for i, c := range in.Cases {
		out, err := render(c)
		results[i].Output = out
		if err != nil {
			results[i].Error = err.Error()
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(map[string]any{"results": results}); err != nil {
		fmt.Fprintln(os.Stderr, "gotemplate:", err)
		os.Exit(2)
	}
}
