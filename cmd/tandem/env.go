package main

import (
	"fmt"
	"log/slog"

	"tandem/internal/config"
	"tandem/internal/member"
	_ "tandem/internal/member/all" // every member kind
)

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usageError{fmt.Errorf("--config is required")}
	}
	c, err := config.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// loadEnv loads the configuration and opens its environment.
func loadEnv(path string, log *slog.Logger) (*member.Env, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	return member.NewEnv(cfg, log), nil
}
